"""What parsers make of fetched bodies. The spider turns each Entry into the one item type that
flows through the pipelines into storage, ``storage.repository.ItemWrite``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Entry:
    """One item as a parser found it in a feed, listing, sitemap, channel or API.

    ``text`` is plain text (feed summary or full text; empty when the source
    only gives a link); ``raw`` is the bytes it came from, kept for snapshots.
    """

    url: str
    title: str = ""
    text: str = ""
    guid: str | None = None
    published_at: datetime | None = None
    language: str | None = None
    full_text: bool = False
    updated: str | None = None  # the feed's own "updated" value, as given
    enclosure: str | None = None

    @property
    def fingerprint(self) -> str:
        """What the source says of the item: a feed that edits an entry (its title, summary,
        dates, link or enclosure) changes this, so the entry is read again."""
        parts = (self.url, self.title, self.text, self.guid or "", self.updated or "",
                 self.published_at.isoformat() if self.published_at else "", self.enclosure or "")
        return "sha256:" + hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class ParseResult:
    """What a parser made of one fetched body: entries plus routine problems as data."""

    entries: list[Entry] = field(default_factory=list)
    warning: str | None = None
    error: str | None = None
    ttl_seconds: float | None = None
    next_page: str | None = None
    follow: list[str] = field(default_factory=list)


@dataclass
class Article:
    """What was extracted from an article page."""

    text: str = ""
    title: str = ""
    canonical_url: str | None = None
    published_at: datetime | None = None
