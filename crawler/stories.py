"""Near-duplicate stories: MinHash signatures and LSH bands of word shingles, and their similarity
(pure; the lookup in the database is ``storage.stories``)."""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from storage.repository import ItemWrite, Prepared
from storage.search import search_terms
from storage.stories import Signed, StoryRule

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

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
def _band_hashers(bands: int, rows: int) -> tuple[hashlib.blake2b, ...]:
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


class MinHashStories:
    """Story signatures of items: MinHash of their word shingles, with LSH band keys.

    ``signatures()`` is pure; ``prepare()`` attaches them (and the search terms) to writes ahead
    of the write transaction, and ``rule`` tells storage (``storage.stories``) which stored item's
    story a new item joins, so the index is shared by every process and worker using the database.
    """

    def __init__(self, threshold: float = THRESHOLD, window: timedelta = WINDOW,
                 min_words: int = MIN_WORDS, max_candidates: int = MAX_CANDIDATES) -> None:
        self.rule = StoryRule(similarity=similarity, threshold=threshold, window=window,
                              max_candidates=max_candidates)
        self.min_words = min_words
        self._permutations: tuple[np.ndarray, np.ndarray] | None = None

    def signature(self, item: ItemWrite) -> Signed | None:
        return self.signatures([item])[0]

    def signatures(self, items: Sequence[ItemWrite]) -> list[Signed | None]:
        """The signatures of ``items``, their MinHashes computed together."""
        shingled = [self._shingles(item) for item in items]
        if all(s is None for s in shingled):  # nothing to hash (a revisit's empty batch): no numpy import
            return [None] * len(shingled)
        hashed = _minhashes([s for s in shingled if s is not None], self._affine())
        out: list[Signed | None] = []
        for values in shingled:
            if values is None:
                out.append(None)
                continue
            hashvalues = next(hashed)
            out.append((_TAG + hashvalues.astype("<u4").tobytes(), band_keys(hashvalues)))
        return out

    def prepare(self, writes: Sequence[ItemWrite]) -> None:
        """Compute the search terms and story signatures of ``writes`` now (``ItemWrite.prepared``),
        so that storing them does only database work: crawl processes prepare outside the write
        transaction, which other processes may be waiting for."""
        for write, signed in zip(writes, self.signatures(writes), strict=True):
            write.prepared = Prepared(search_terms(write.title, write.text), signed)

    def _shingles(self, item: ItemWrite) -> set[bytes] | None:
        # Outlets rewrite headlines of syndicated copy: compare bodies when there is one.
        tokens = words("", item.text)
        if len(tokens) < self.min_words:
            tokens = words(item.title, item.text)
        if len(tokens) < self.min_words:
            return None
        return shingles(tokens)

    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        if self._permutations is None:
            self._permutations = _permutations()
        return self._permutations


def _permutations() -> tuple[np.ndarray, np.ndarray]:
    """datasketch's "affine32" permutations for NUM_PERM and SEED: h -> a * h + b mod 2**32."""
    import numpy as np

    generator = np.random.RandomState(SEED)
    a = generator.randint(0, 1 << 31, NUM_PERM, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, NUM_PERM, dtype=np.uint32)
    return a, b


def _fmix32(values: npt.NDArray[np.uint32]) -> np.ndarray:
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
