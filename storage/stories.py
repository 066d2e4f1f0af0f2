"""Story lookup: which stored story a new item joins, from the LSH bands and MinHash signatures
the write path stores (``story_bands``, ``item_signatures``).

The signatures themselves, and how alike two of them are, are the crawler's
(``crawler.stories``): storage gets them as bytes and band keys on each write and the similarity
as a plain function in a ``StoryRule``, and owns every query."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Integer, bindparam, text
from sqlalchemy.orm import Session

from storage.models import UtcDateTime

Signed = tuple[bytes, list[int]]  # a signature and its band keys


@dataclass(frozen=True)
class SameAs:
    """A story choice in a batch: the (new) story of the batch's item at ``index``."""

    index: int


Choice = int | SameAs | None  # a stored story, an earlier new item's story, or a new story


@dataclass(frozen=True)
class StoryRule:
    """When a new item joins the story of a recent item of another source: ``similarity`` of the
    two signatures at least ``threshold``, among the ``max_candidates`` recent items (``window``)
    that share most bands with it."""

    similarity: Callable[[bytes, bytes], float]
    threshold: float
    window: timedelta
    max_candidates: int


def choose_stories(session: Session, rule: StoryRule | None, signed: Sequence[Signed | None],
                   nows: Sequence[datetime], sources: Sequence[str],
                   exclude: Sequence[int | None] = ()) -> list[Choice]:
    """The story of each new item of a batch, as if each had been saved before the next: the
    stored candidates of every item in a few statements, and the earlier items of the batch as
    further candidates (their ids, not yet assigned, follow every stored one). Only another
    source's item counts: syndication is across sources, and one source's items that share
    boilerplate must never swallow each other's alerts. ``exclude``: per item, a stored item
    that is no candidate (the item itself, when an old item gets its first story)."""
    if rule is None or all(s is None for s in signed):
        return [None] * len(signed)
    stored = _stored_candidates(session, rule, signed, nows, exclude)
    earlier: list[_Pending] = []
    by_band: dict[int, list[int]] = {}  # band -> the earlier items with it (one entry per row)
    choices: list[Choice] = []
    for index, (item, now) in enumerate(zip(signed, nows, strict=True)):
        if item is None:
            choices.append(None)
            continue
        signature, bands = item
        since = now - rule.window
        ranked: list[tuple[int, int, bytes | None, int | SameAs | None]] = [
            (-shared, item_id, stored_sig, story_id)
            for item_id, shared, story_id, stored_sig, source in stored[index] if source != sources[index]]
        shared_with = Counter(order for band in set(bands) for order in by_band.get(band, ()))
        for order, shared in shared_with.items():
            pending = earlier[order]
            if pending.seen_at >= since and pending.source != sources[index]:
                ranked.append((-shared, _AFTER_STORED + order, pending.signature, pending.story))
        ranked.sort(key=lambda r: (r[0], r[1]))
        choice = _best(rule, signature, [(sig, story) for _, _, sig, story in ranked[:rule.max_candidates]
                                         if story is not None and sig is not None])
        choices.append(choice)
        for band in bands:
            by_band.setdefault(band, []).append(len(earlier))
        earlier.append(_Pending(now, signature, choice if choice is not None else SameAs(index),
                                sources[index]))
    return choices


def _best(rule: StoryRule, signature: bytes, candidates: list[tuple[bytes, int | SameAs]]) -> int | SameAs | None:
    """The story of the most similar candidate at or above the threshold (ties: the oldest
    story; stories of the batch are newer than every stored one)."""
    best: tuple[float, tuple[int, int], int | SameAs] | None = None
    for stored_sig, story in candidates:
        score = rule.similarity(signature, stored_sig)
        if score >= rule.threshold:
            key = (0, story) if isinstance(story, int) else (1, story.index)
            if best is None or (score, _neg(key)) > (best[0], _neg(best[1])):
                best = (score, key, story)
    return best[2] if best else None


Candidate = tuple[int, int, int | None, bytes | None, str | None]  # item, shared bands, story, signature, source


def _stored_candidates(session: Session, rule: StoryRule, signed: Sequence[Signed | None],
                       nows: Sequence[datetime], exclude: Sequence[int | None]) -> list[list[Candidate]]:
    """Per item: (item id, shared bands, story id, signature, source) of the stored items that
    share most recent bands with it (at most ``max_candidates``; ties: the lower item id), the
    story and signature filters applied after the limit.

    The band rows of the whole batch are read in one indexed search (items of one batch share
    bands when they are alike, and each band is read once) and counted here."""
    excluded = list(exclude) or [None] * len(signed)
    todo = [(i, set(s[1]), now - rule.window) for i, (s, now) in enumerate(zip(signed, nows, strict=True))
            if s is not None and s[1]]
    ranked: list[list[tuple[int, int]]] = [[] for _ in signed]
    if not todo:
        return [[] for _ in signed]
    bands = sorted(set().union(*(b for _, b, _ in todo)))
    since = min(since for _, _, since in todo)
    # Usually every item of a batch was fetched at once: one window, applied by the query
    # alone; else each row's time is read and compared per item.
    uniform = all(item_since == since for _, _, item_since in todo)
    query = _BAND_ITEMS if uniform else _BAND_ROWS
    rows: dict[int, list[tuple[int, datetime | None]]] = {}
    for start in range(0, len(bands), _BANDS_PER_QUERY):
        for band, item_id, *seen_at in session.execute(
                query, {"bands": bands[start:start + _BANDS_PER_QUERY], "since": since}):
            rows.setdefault(band, []).append((item_id, seen_at[0] if seen_at else None))
    for index, item_bands, item_since in todo:
        if uniform:
            shared = Counter(item_id for band in item_bands for item_id, _ in rows.get(band, ()))
        else:
            shared = Counter(item_id for band in item_bands for item_id, seen_at in rows.get(band, ())
                             if seen_at is not None and seen_at >= item_since)
        if (own := excluded[index]) is not None:
            shared.pop(own, None)
        ranked[index] = sorted(shared.items(), key=lambda r: (-r[1], r[0]))[:rule.max_candidates]
    ids = sorted({item_id for found in ranked for item_id, _ in found})
    details: dict[int, tuple[int, bytes, str]] = {}
    for start in range(0, len(ids), 500):
        found = session.execute(_DETAILS, {"ids": ids[start:start + 500]})
        details.update((item_id, (story_id, bytes(sig), source)) for item_id, story_id, sig, source in found)
    out: list[list[Candidate]] = []
    for found_ids in ranked:
        out.append([(item_id, shared_count, *details[item_id]) if item_id in details
                    else (item_id, shared_count, None, None, None) for item_id, shared_count in found_ids])
    return out


_AFTER_STORED = 1 << 62  # ordering key of the batch's own items: after every stored item id
_BANDS_PER_QUERY = 2000  # band keys per lookup (well under every backend's parameter limit)

# Plain SQL: an ORM select costs ~1 ms per call more than the query itself. Index
# ix_story_bands_band (band, seen_at) serves these on SQLite and PostgreSQL.
# Every recent row of the batch's bands.
_BAND_ROWS = text("""
    SELECT band, item_id, seen_at FROM story_bands WHERE band IN :bands AND seen_at >= :since
""").bindparams(bindparam("bands", expanding=True), bindparam("since", type_=UtcDateTime())).columns(
    band=BigInteger(), item_id=Integer(), seen_at=UtcDateTime())

# The same rows without their times (the window is the same for every item of the batch).
_BAND_ITEMS = text("""
    SELECT band, item_id FROM story_bands WHERE band IN :bands AND seen_at >= :since
""").bindparams(bindparam("bands", expanding=True), bindparam("since", type_=UtcDateTime())).columns(
    band=BigInteger(), item_id=Integer())

_DETAILS = text("""
    SELECT items.id, items.story_id, item_signatures.signature, items.source_id
    FROM items JOIN item_signatures ON item_signatures.item_id = items.id
    WHERE items.id IN :ids AND items.story_id IS NOT NULL
""").bindparams(bindparam("ids", expanding=True))


@dataclass(frozen=True)
class _Pending:
    """An earlier new item of the batch, as a candidate of the later ones."""

    seen_at: datetime
    signature: bytes
    story: int | SameAs
    source: str


def _neg(key: tuple[int, int]) -> tuple[int, int]:
    return (-key[0], -key[1])
