"""Near-duplicate stories: MinHash signatures and LSH bands of word shingles, looked up in the database."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from storage.models import UtcDateTime
from storage.repository import ItemWrite, StoryFinder

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
    return {" ".join(tokens[i:i + size]).encode("utf-8") for i in range(len(tokens) - size + 1)}


def band_keys(hashvalues: np.ndarray, bands: int = BANDS, rows: int = ROWS) -> list[int]:
    """One signed 64-bit key per LSH band (band number included, so bands never collide)."""
    raw = hashvalues.astype("<u4").tobytes()
    keys = []
    for band in range(bands):
        chunk = raw[band * rows * 4:(band + 1) * rows * 4]
        salt = band.to_bytes(8, "little") + rows.to_bytes(8, "little")
        digest = hashlib.blake2b(chunk, digest_size=8, person=_TAG[:16], salt=salt)
        keys.append(int.from_bytes(digest.digest(), "little", signed=True))
    return keys


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
    WHERE items.story_id IS NOT NULL
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
        # Outlets rewrite headlines of syndicated copy: compare bodies when there is one.
        tokens = words("", item.text)
        if len(tokens) < self.min_words:
            tokens = words(item.title, item.text)
        if len(tokens) < self.min_words:
            return None
        hashvalues = self._minhash(shingles(tokens))
        return _TAG + hashvalues.astype("<u4").tobytes(), band_keys(hashvalues)

    def find(self, session: Session, signature: bytes, bands: list[int], now: datetime,
             exclude_item: int | None) -> int | None:
        best: tuple[float, int] | None = None
        for story_id, stored in self._candidates(session, bands, now - self.window, exclude_item):
            score = similarity(signature, stored)
            if score >= self.threshold and (best is None or (score, -story_id) > (best[0], -best[1])):
                best = (score, story_id)
        return best[1] if best else None

    def _candidates(self, session: Session, bands: list[int], since: datetime,
                    exclude_item: int | None) -> list[tuple[int, bytes]]:
        """Story and signature of the recent items sharing most bands with ours (at most max_candidates)."""
        if not bands:
            return []
        rows = session.execute(_CANDIDATES, {"bands": bands, "since": since, "exclude": exclude_item or 0,
                                             "limit": self.max_candidates})
        return [(story_id, bytes(stored)) for story_id, stored in rows]

    def _minhash(self, values: set[bytes]) -> np.ndarray:
        from datasketch import MinHash

        if self._permutations is None:
            self._permutations = MinHash(NUM_PERM, seed=SEED, scheme="affine32").permutations
        sketch = MinHash(NUM_PERM, seed=SEED, permutations=self._permutations, scheme="affine32")
        sketch.update_batch(values)
        return sketch.hashvalues
