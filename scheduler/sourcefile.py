"""Writing ``[[sources]]`` tables into newsmon.toml with tomlkit, keeping the file's comments
and layout. A write never leaves a broken file: the new text goes to a temporary file next to
it, is loaded with the real configuration loader, and only then replaces the file (atomic
rename). A file without ``[[sources]]`` runs on the built-in catalogue; adding to it first
writes the catalogue out, so adding one source does not drop the built-in ones."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT, Table

from crawler.sources import SourceSpec
from scheduler.config import load_config
from scheduler.errors import ConfigError

# Keys first in this order; the rest as the model lists them.
_ORDER = ("id", "name", "kind", "url", "language", "timezone", "enabled", "allow_private")


def source_table(spec: SourceSpec) -> Table:
    """The ``[[sources]]`` table of ``spec``: its non-default settings (kind always)."""
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
    data["kind"] = spec.kind
    table = tomlkit.table()
    for key in sorted(data, key=lambda k: (_ORDER.index(k) if k in _ORDER else len(_ORDER),
                                           isinstance(data[k], dict))):
        value = data[key]
        if isinstance(value, dict):
            sub = tomlkit.table()
            for name, item in value.items():
                if item is not None:
                    sub.add(name, item)
            table.add(key, sub)
        else:
            table.add(key, value)
    return table


def sources_toml(specs: Iterable[SourceSpec]) -> str:
    """``[[sources]]`` tables of ``specs`` as TOML text."""
    doc = tomlkit.document()
    doc.add("sources", _aot(specs))
    return tomlkit.dumps(doc)


def _aot(specs: Iterable[SourceSpec]) -> AoT:
    aot = tomlkit.aot()
    for spec in specs:
        aot.append(source_table(spec))
    return aot


def add_sources(path: Path, specs: Sequence[SourceSpec], *, builtins: Sequence[SourceSpec] = ()) -> bool:
    """Append ``specs`` to the file at ``path`` (created when absent); True when the built-in
    catalogue (``builtins``) was written out first because the file had no sources.

    Raises ConfigError (and leaves the file as it was) when the result would not load.
    """
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    doc = tomlkit.parse(text)
    wrote_builtins = False
    if "sources" not in doc:
        if builtins:
            doc.add(tomlkit.nl())
            doc.add(tomlkit.comment("The built-in catalogue, written out when the first source was added."))
        doc.add("sources", _aot(builtins))
        wrote_builtins = bool(builtins)
    aot = doc["sources"]
    if not isinstance(aot, AoT):
        raise ConfigError(str(path), "sources", "is not an array of tables ([[sources]])")
    for spec in specs:
        if len(aot):
            _blank_line_after(aot[-1])
        aot.append(source_table(spec))
    replace_checked(path, tomlkit.dumps(doc))
    return wrote_builtins


def _blank_line_after(table: Table) -> None:
    """End the table (or its last sub-table) with an empty line, unless it does already."""
    last: Any = table
    while True:
        subs = [v for v in last.value.values() if isinstance(v, Table)]
        if not subs:
            break
        last = subs[-1]
    if not tomlkit.dumps({"t": last}).endswith("\n\n") and not last.as_string().endswith("\n\n"):
        last.add(tomlkit.nl())


def replace_checked(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` only if it loads as a configuration."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        try:
            load_config(str(tmp), environ={})
        except ConfigError as exc:  # name the user's file, not the temporary one
            raise ConfigError(str(path), exc.key, f"the change was not written: {exc.message}") from None
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
