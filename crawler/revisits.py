"""What a revisit of an article page means: is the page gone (a 404/410, or a redirect to the
site's home page or a listing), and did its title or text change — judged on normalised text
without the lines that change on every view (counters, clocks, "generated at")."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from crawler.text import clean_text, fold_text
from crawler.urls import canonical_url
from storage.revisits import RevisitClaim

GONE_STATUSES = frozenset({404, 410})
# A short line with one of these words and a number is a counter or a clock, not content.
_VOLATILE = re.compile(
    r"\b(views?|viewed|hits|reads|visits|online|generated|rendered|updated|loaded|time|"
    r"просмотр\w*|прочитан\w*|посещени\w*|онлайн|сгенерирован\w*|обновлен\w*|время|"
    r"baxış\w*|qaralış\w*|көрілім\w*|қаралым\w*)\b", re.IGNORECASE)
_LETTERS = re.compile(r"[^\W\d_]+")
_DIGIT = re.compile(r"\d")
VOLATILE_LINE = 80  # characters: longer lines are content, whatever they contain
VOLATILE_WORDS = 6
_LANGUAGE_HOME = re.compile(r"^(?:/[a-z]{2}(?:[-_][a-z]{2})?)?(?:/(?:index|default|main|home)(?:\.\w+)?)?/?$",
                            re.IGNORECASE)


def _volatile(line: str) -> bool:
    if len(line) > VOLATILE_LINE or not _DIGIT.search(line):
        return False
    words = _LETTERS.findall(line)
    return not words or (len(words) <= VOLATILE_WORDS and bool(_VOLATILE.search(line)))


def stable_lines(text: str) -> list[str]:
    """The lines of ``text`` that are content: without numbers-only lines (dates, clocks,
    counters) and short labelled counters ("Просмотров: 1523", "Page generated in 0.03 s")."""
    return [line for line in (s.strip() for s in clean_text(text).split("\n"))
            if line and not _volatile(line)]


def page_fingerprint(text: str) -> str:
    """A hash of the content of a page's text, equal across views of an unchanged page."""
    folded = fold_text("\n".join(stable_lines(text)), cleaned=True)
    return "sha256:" + hashlib.sha256(folded.encode("utf-8")).hexdigest()


def title_key(title: str) -> str:
    return fold_text(title)


def removal_redirect(item_url: str, final_url: str, listing_urls: Iterable[str] = ()) -> bool:
    """True when a request for ``item_url`` ended at ``final_url`` and that is the site's home
    page (``/``, ``/en/``, ``/index.php``), one of the source's listings, or a section above
    the item (``/news/123`` → ``/news/``): the article is gone."""
    final = canonical_url(final_url)
    if final == canonical_url(item_url):
        return False
    path = urlsplit(final).path.rstrip("/")
    if _LANGUAGE_HOME.match(path or "/"):
        return True
    if final in {canonical_url(u) for u in listing_urls}:
        return True
    item_path = urlsplit(canonical_url(item_url)).path.rstrip("/")
    return bool(path) and item_path.startswith(path + "/")


@dataclass(frozen=True)
class Judgement:
    """A revisited page against what was known: ``changed`` (store a version), the title and
    text the item then has, and the page's own title and fingerprint (the next baseline)."""

    changed: bool
    title: str
    text: str
    page_title: str
    page_hash: str


def judge(claim: RevisitClaim, page_title: str, page_text: str) -> Judgement:
    """Compare the page with the last revisit (its title and text fingerprint), or, at the
    first revisit, its text with the item's when that text was read from this page (an item
    whose text came from its feed only sets the baseline: the page is not an edit of it). On a
    revisit the page is the authority: a changed title or text replaces the item's."""
    fingerprint, key = page_fingerprint(page_text), title_key(page_title)
    baseline_title = claim.page_title
    if claim.page_hash is not None:
        baseline = claim.page_hash
    elif _read_from_page(claim):
        baseline = page_fingerprint(claim.text)
    else:
        return Judgement(claim.removed, claim.title, claim.text, key, fingerprint)
    text_changed = bool(page_text) and fingerprint != baseline
    title_changed = bool(page_title) and baseline_title is not None and key != baseline_title
    return Judgement(text_changed or title_changed or claim.removed,
                     page_title if title_changed else claim.title,
                     page_text if text_changed else claim.text, key, fingerprint)


def _read_from_page(claim: RevisitClaim) -> bool:
    if not claim.version_url:
        return False
    return canonical_url(claim.version_url) in (claim.canonical_url, canonical_url(claim.url))
