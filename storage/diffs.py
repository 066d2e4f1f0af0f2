"""Word diffs between two versions of an item: the whole text with changes marked (``show
--versions``) and a short one, its longest changed runs first (alert bodies)."""

from __future__ import annotations

import difflib
import re

_TOKEN = re.compile(r"\S+")
MAX_TOKENS = 40_000  # beyond this, texts are compared line by line (difflib is quadratic)
SHORT_DIFF_BYTES = 4096
CONTEXT_WORDS = 4


def _runs(old: str, new: str) -> tuple[list[str], list[str], list[tuple[str, int, int, int, int]]]:
    a: list[str] = _TOKEN.findall(old)
    b: list[str] = _TOKEN.findall(new)
    if len(a) + len(b) > MAX_TOKENS:
        a, b = old.splitlines(), new.splitlines()
    ops: list[tuple[str, int, int, int, int]] = list(
        difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes())
    return a, b, ops


def word_diff(old: str, new: str) -> str:
    """``new`` with the words removed since ``old`` as ``[-…-]`` and added as ``{+…+}``
    (git's --word-diff=plain notation); "" when they are the same."""
    if old == new:
        return ""
    a, b, ops = _runs(old, new)
    out = []
    for op, i1, i2, j1, j2 in ops:
        if op == "equal":
            out.append(" ".join(a[i1:i2]))
            continue
        if op in ("delete", "replace"):
            out.append("[-" + " ".join(a[i1:i2]) + "-]")
        if op in ("insert", "replace"):
            out.append("{+" + " ".join(b[j1:j2]) + "+}")
    return " ".join(out)


def short_word_diff(old: str, new: str, limit: int = SHORT_DIFF_BYTES) -> str:
    """The changed runs of ``old`` → ``new``, one a line with a few words of context, the
    longest first, cut to ``limit`` bytes of UTF-8 (a run that does not fit is shortened
    with "…")."""
    if old == new:
        return ""
    a, b, ops = _runs(old, new)
    runs = []
    for index, (op, i1, i2, j1, j2) in enumerate(ops):
        if op == "equal":
            continue
        before = a[max(0, i1 - CONTEXT_WORDS):i1] if index else []
        after = a[i2:i2 + CONTEXT_WORDS]
        parts = [" ".join(before)] if before else []
        if op in ("delete", "replace"):
            parts.append("[-" + " ".join(a[i1:i2]) + "-]")
        if op in ("insert", "replace"):
            parts.append("{+" + " ".join(b[j1:j2]) + "+}")
        if after:
            parts.append(" ".join(after))
        runs.append(((i2 - i1) + (j2 - j1), index, " ".join(parts)))
    runs.sort(key=lambda r: (-r[0], r[1]))
    out: list[str] = []
    used = 0
    for _, _, line in runs:
        size = len(line.encode("utf-8")) + (1 if out else 0)
        if used + size > limit:
            room = limit - used - (1 if out else 0) - len("…".encode())
            if room > 40:
                out.append(line.encode("utf-8")[:room].decode("utf-8", "ignore") + "…")
            break
        out.append(line)
        used += size
    return "\n".join(out)
