"""Index keys of long strings (URLs, GUIDs): light to import, so that the import's worker
process computes them without loading the database layer."""

from __future__ import annotations

import hashlib


def key_of(value: str) -> str:
    """A fixed-size index key for a long string (URLs, GUIDs)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:40]
