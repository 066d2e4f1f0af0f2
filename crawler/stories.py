"""Near-duplicate stories: MinHash signatures and LSH bands of word shingles, looked up in the database."""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Integer, bindparam, text
from sqlalchemy.orm import Session

from storage.models import UtcDateTime
from storage.repository import ItemWrite, SameAs, Signed, StoryFinder

if TYPE_CHECKING:
    import numpy as np

NUM_PERM = 128
# 25 bands of 5 rows (125 of the 128 values; the similarity check uses all 128): a pair with
# similarity s becomes a candidate with probability 1 - (1 - s**5)**25, which is 0.99 at 0.7,
# 0.86 at 0.6 and 0.06 at 0.3. (16 x 8 would miss 39 % of the pairs at 0.7.)
BANDS = 25
ROWS = 5
SEED = 20250204
SHINGLE = 3
MIN_WORDS = 8
# Estimated Jaccard similarity of 3-word shingles (title + text) at or above which two items are
# one story. In tests/test_stories.py agency copy re-published with another dateline, headline and
# footer scores 0.82 (Trend vs AZERTAC); two ministry read-outs of different meetings written from
# one template score 0.54, and two different write-ups of the same meeting 0.05. 0.7 sits about
# 3.5 standard errors of a 128-value MinHash from both 0.54 and 0.82: a missed merge costs a
# repeated alert, a wrong merge a lost one, so the threshold leans towards the copy side.
THRESHOLD = 0.7
WINDOW = timedelta(days=3)
MAX_CANDIDATES = 64

# Signature bytes: a tag naming the parameters, then NUM_PERM little-endian uint32 hash values.
_TAG = f"mh1/{NUM_PERM}/{SEED}/{SHINGLE}:".encode()
_SIGNATURE_SIZE = len(_TAG) + 4 * NUM_PERM
_WORD = re.compile(r"[^\W_]+")


def words(title: str, text: str) -> list[str]:
    """The words of title + text: NFKC, case-folded, ё as е, letters and digits only."""
    folded = unicodedata.normalize("NFKC", f"{title}\n{text}").casefold().replace("ё", "е")
    return _WORD.findall(folded)


def shingles(tokens: list[str], size: int = SHINGLE) -> set[bytes]:
    """The distinct ``size``-word shingles of ``tokens``, UTF-8 encoded."""
    if size == 3:
        return {f"{a} {b} {c}".encode() for a, b, c in zip(tokens, tokens[1:], tokens[2:], strict=False)}
    return {" ".join(tokens[i:i + size]).encode("utf-8") for i in range(len(tokens) - size + 1)}


def band_keys(hashvalues: np.ndarray, bands: int = BANDS, rows: int = ROWS) -> list[int]:
    """One signed 64-bit key per LSH band (band number included, so bands never collide)."""
    raw = memoryview(hashvalues.astype("<u4").tobytes())
    step = rows * 4
    keys = []
    for band, keyed in enumerate(_band_hashers(bands, rows)):
        digest = keyed.copy()  # copying a keyed BLAKE2b is half the cost of setting one up
        digest.update(raw[band * step:(band + 1) * step])
        keys.append(int.from_bytes(digest.digest(), "little", signed=True))
    return keys


@functools.cache
def _band_hashers(bands: int, rows: int) -> tuple[Any, ...]:
    """An empty BLAKE2b per band, personalised with the tag and salted with band and rows."""
    return tuple(hashlib.blake2b(digest_size=8, person=_TAG[:16],
                                 salt=band.to_bytes(8, "little") + rows.to_bytes(8, "little"))
                 for band in range(bands))


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of two stored signatures; 0 when either is not ours."""
    import numpy as np

    if len(a) != _SIGNATURE_SIZE or len(b) != _SIGNATURE_SIZE or not a.startswith(_TAG) or not b.startswith(_TAG):
        return 0.0
    start = len(_TAG)
    left = np.frombuffer(a, dtype="<u4", offset=start)
    right = np.frombuffer(b, dtype="<u4", offset=start)
    return float(np.count_nonzero(left == right)) / NUM_PERM


# The lookup, as plain SQL: the ORM select costs ~1 ms per call more than the query itself. Index
# ix_story_bands_band (band, seen_at) serves the inner query on SQLite and PostgreSQL.
_CANDIDATES = text("""
    SELECT items.story_id, item_signatures.signature
    FROM (SELECT item_id, count(*) AS shared FROM story_bands
          WHERE band IN :bands AND seen_at >= :since AND item_id <> :exclude
          GROUP BY item_id ORDER BY shared DESC, item_id LIMIT :limit) AS ranked
    JOIN item_signatures ON item_signatures.item_id = ranked.item_id
    JOIN items ON items.id = ranked.item_id
    WHERE items.story_id IS NOT NULL AND items.source_id <> :source
""").bindparams(bindparam("bands", expanding=True), bindparam("since", type_=UtcDateTime()))


class MinHashStoryFinder(StoryFinder):
    """Joins an item to the story of the most similar recent item (MinHash LSH, index in the database).

    ``signature()`` is pure; ``find()`` reads the ``story_bands`` and ``item_signatures`` rows the
    repository writes, so the index is shared by every process and worker using the database.
    """

    def __init__(self, threshold: float = THRESHOLD, window: timedelta = WINDOW,
                 min_words: int = MIN_WORDS, max_candidates: int = MAX_CANDIDATES) -> None:
        self.threshold, self.window = threshold, window
        self.min_words, self.max_candidates = min_words, max_candidates
        self._permutations: Any = None

    def signature(self, item: ItemWrite) -> tuple[bytes, list[int]] | None:
        return self.signatures([item])[0]

    def signatures(self, items: Sequence[ItemWrite]) -> list[Signed | None]:
        """The signatures of ``items``, their MinHashes computed together."""
        shingled = [self._shingles(item) for item in items]
        hashed = _minhashes([s for s in shingled if s is not None], self._affine())
        out: list[Signed | None] = []
        for values in shingled:
            if values is None:
                out.append(None)
                continue
            hashvalues = next(hashed)
            out.append((_TAG + hashvalues.astype("<u4").tobytes(), band_keys(hashvalues)))
        return out

    def _shingles(self, item: ItemWrite) -> set[bytes] | None:
        # Outlets rewrite headlines of syndicated copy: compare bodies when there is one.
        tokens = words("", item.text)
        if len(tokens) < self.min_words:
            tokens = words(item.title, item.text)
        if len(tokens) < self.min_words:
            return None
        return shingles(tokens)

    def find(self, session: Session, signature: bytes, bands: list[int], now: datetime,
             exclude_item: int | None, source_id: str = "") -> int | None:
        """The story of the most similar recent item of ANOTHER source: syndication is across
        sources, and one source's items that share boilerplate must never swallow each other's
        alerts."""
        best: tuple[float, int] | None = None
        for story_id, stored in self._candidates(session, bands, now - self.window, exclude_item, source_id):
            score = similarity(signature, stored)
            if score >= self.threshold and (best is None or (score, -story_id) > (best[0], -best[1])):
                best = (score, story_id)
        return best[1] if best else None

    def _candidates(self, session: Session, bands: list[int], since: datetime,
                    exclude_item: int | None, source_id: str = "") -> list[tuple[int, bytes]]:
        """Story and signature of the recent items sharing most bands with ours (at most max_candidates)."""
        if not bands:
            return []
        rows = session.execute(_CANDIDATES, {"bands": bands, "since": since, "exclude": exclude_item or 0,
                                             "source": source_id,
                                             "limit": self.max_candidates})
        return [(story_id, bytes(stored)) for story_id, stored in rows]

    def find_many(self, session: Session, signed: Sequence[Signed | None],
                  nows: Sequence[datetime], sources: Sequence[str] = ()) -> list[int | SameAs | None]:
        """``find`` for the new items of a batch, as if each had been saved before the next:
        the stored candidates of every item in a few statements, and the earlier items of the
        batch as further candidates (their ids, not yet assigned, follow every stored one)."""
        sources = list(sources) or [""] * len(signed)
        stored = self._stored_candidates(session, signed, nows)
        earlier: list[_Pending] = []
        by_band: dict[int, list[int]] = {}  # band -> the earlier items with it (one entry per row)
        choices: list[int | SameAs | None] = []
        for index, (item, now) in enumerate(zip(signed, nows, strict=True)):
            if item is None:
                choices.append(None)
                continue
            signature, bands = item
            since = now - self.window
            ranked: list[tuple[int, int, bytes, int | SameAs]] = [
                (-shared, item_id, stored_sig, story_id)
                for item_id, shared, story_id, stored_sig, source in stored[index] if source != sources[index]]
            shared_with = Counter(order for band in set(bands) for order in by_band.get(band, ()))
            for order, shared in shared_with.items():
                pending = earlier[order]
                if pending.seen_at >= since and pending.source != sources[index]:
                    ranked.append((-shared, _AFTER_STORED + order, pending.signature, pending.story))
            ranked.sort(key=lambda r: (r[0], r[1]))
            choice = self._best(signature, [(sig, story) for _, _, sig, story in ranked[:self.max_candidates]
                                             if story is not None and sig is not None])
            choices.append(choice)
            for band in bands:
                by_band.setdefault(band, []).append(len(earlier))
            earlier.append(_Pending(now, signature, choice if choice is not None else SameAs(index),
                                    sources[index]))
        return choices

    def _best(self, signature: bytes, candidates: list[tuple[bytes, int | SameAs]]) -> int | SameAs | None:
        """The story of the most similar candidate at or above the threshold (ties: the oldest
        story; stories of the batch are newer than every stored one)."""
        best: tuple[float, tuple[int, int], int | SameAs] | None = None
        for stored_sig, story in candidates:
            score = similarity(signature, stored_sig)
            if score >= self.threshold:
                key = (0, story) if isinstance(story, int) else (1, story.index)
                if best is None or (score, _neg(key)) > (best[0], _neg(best[1])):
                    best = (score, key, story)
        return best[2] if best else None

    def _stored_candidates(self, session: Session, signed: Sequence[Signed | None],
                           nows: Sequence[datetime]
                           ) -> list[list[tuple[int, int, int | None, bytes | None, str | None]]]:
        """Per item: (item id, shared bands, story id, signature, source) of the stored items ranked as
        ``_CANDIDATES`` ranks them, the story and signature filters applied after the limit.

        The band rows of the whole batch are read in one indexed search (items of one batch share
        bands when they are alike, and each band is read once) and counted here."""
        todo = [(i, set(s[1]), now - self.window) for i, (s, now) in enumerate(zip(signed, nows, strict=True))
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
            ranked[index] = sorted(shared.items(), key=lambda r: (-r[1], r[0]))[:self.max_candidates]
        ids = sorted({item_id for found in ranked for item_id, _ in found})
        details: dict[int, tuple[int, bytes, str]] = {}
        for start in range(0, len(ids), 500):
            found = session.execute(_DETAILS, {"ids": ids[start:start + 500]})
            details.update((item_id, (story_id, bytes(sig), source)) for item_id, story_id, sig, source in found)
        return [[(item_id, shared, *details.get(item_id, (None, None, None)))  # type: ignore[misc]
                 for item_id, shared in found] for found in ranked]

    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        if self._permutations is None:
            self._permutations = _permutations()
        return self._permutations


_AFTER_STORED = 1 << 62  # ordering key of the batch's own items: after every stored item id
_BANDS_PER_QUERY = 2000  # band keys per lookup (well under every backend's parameter limit)

# Every recent row of the batch's bands (index ix_story_bands_band (band, seen_at)).
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


def _permutations() -> tuple[np.ndarray, np.ndarray]:
    """datasketch's "affine32" permutations for NUM_PERM and SEED: h -> a * h + b mod 2**32."""
    import numpy as np

    generator = np.random.RandomState(SEED)
    a = generator.randint(0, 1 << 31, NUM_PERM, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, NUM_PERM, dtype=np.uint32)
    return a, b


def _fmix32(values: np.ndarray) -> np.ndarray:
    """The MurmurHash3 32-bit finalizer (datasketch's pre-mix of the input hashes)."""
    import numpy as np

    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


def _minhashes(sets: list[set[bytes]], affine: tuple[np.ndarray, np.ndarray]) -> Iterator[np.ndarray]:
    """The MinHash values of each set, as datasketch's ``MinHash(NUM_PERM, seed=SEED,
    scheme="affine32").update_batch(values).hashvalues`` (SHA-1 of each value), for all sets in
    one array operation."""
    import numpy as np

    if not sets:
        return iter(())
    digests = b"".join(hashlib.sha1(value).digest()[:4] for values in sets for value in values)
    hashed = _fmix32(np.frombuffer(digests, dtype="<u4").astype(np.uint32))
    a, b = affine
    permuted = hashed[:, None] * a[None, :] + b[None, :]
    starts = np.cumsum([0] + [len(values) for values in sets[:-1]])
    return iter(np.minimum.reduceat(permuted, starts, axis=0))
