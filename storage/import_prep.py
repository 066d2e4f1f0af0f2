"""The pure half of `newsmon import`: a line of the export format checked and made ready to
write, with everything that needs no database computed here (keys, versions in order, search
terms, PostgreSQL's tsvector). ``prepare`` runs in a worker process while the importing process
writes the previous chunk (``storage.transfer.Importer``), or in-process for small inputs; both
give the same records."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from storage.errors import ImportLineError
from storage.keys import key_of
from storage.search import PAIR_MULTIPLIER, fts5_terms, search_words, word_hash

# One prepared line: (line number, the record or None, the reason it is bad or None).
Prepared = tuple[int, dict[str, Any] | None, str | None]
# Lines of a file: (its path, the number of the first line, the byte offsets where they start and end).
Span = tuple[str, int, int, int]


def prepare(lines: list[tuple[int, str | bytes]], backend: str, now: datetime) -> list[Prepared]:
    """Each non-blank line (UTF-8 bytes or text) checked and prepared for a database of
    ``backend`` ("sqlite" or "postgresql"); ``now`` stands for missing times."""
    to_db = _time_to_db(backend)
    out: list[Prepared] = []
    for number, line in lines:
        if not line.strip():
            continue
        try:
            out.append((number, prepare_record(json.loads(line), to_db, now), None))
        except (ImportLineError, ValueError, TypeError) as exc:  # JSON and UTF-8 errors are ValueErrors
            out.append((number, None, str(exc)))
    return out


def prepare_span(span: Span, backend: str, now: datetime) -> list[Prepared]:
    """``prepare`` of the lines of a file between two offsets (read here: a worker process gets
    the span, not the lines), split as iterating the file in binary splits them."""
    path, first, start, end = span
    with open(path, "rb") as file:
        file.seek(start)
        data = file.read(end - start)
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()  # not a line: what follows the last line's end
    return prepare(list(enumerate(lines, first)), backend, now)


def prepare_record(raw: Any, to_db: Callable[[datetime], Any] | None, now: datetime) -> dict[str, Any]:
    """The record checked, with ``_sources``, ``_versions`` (in version order, fetched times
    parsed, ``now`` when missing), ``_kept`` (the versions with distinct content, and those that
    mark a removal or a return: the ones a new item stores), ``_first_seen``, ``_published``,
    ``_matches``, ``_url_key``, ``_guid_key``,
    ``_terms`` (the search terms of the last kept version), ``_tsv`` (on PostgreSQL, see
    ``search_binary``), ``_pairs`` (with ``_tsv``: its pair hashes), and
    ``_at``: a new item's times as the driver takes them (``_at`` of each kept version: its
    fetched time). The exported title, text, versions and matches
    are dropped once read."""
    record = _check(raw)
    versions = _versions(record)
    for v in versions:
        v["_fetched"] = _time(v.get("fetched_at"), "fetched_at") or now
    record["_versions"] = versions
    record["_first_seen"] = first_seen = _time(record.get("first_seen_at"), "first_seen_at") or now
    record["_published"] = published = _time(record.get("published_at"), "published_at")
    record["_matches"] = _matches(record.get("matches"))
    guid = record.get("guid")
    record["_url_key"] = key_of(record["canonical_url"])
    record["_guid_key"] = key_of(guid) if isinstance(guid, str) and guid else None
    kept: list[dict[str, Any]] = []
    seen = set()
    for v in versions:  # a removal (or a return) keeps the text: kept for its state
        if v["content_hash"] not in seen or bool(v.get("removed")) != bool(kept[-1].get("removed")):
            seen.add(v["content_hash"])
            kept.append(v)
    record["_kept"] = kept
    words = search_words(kept[-1].get("title") or "", kept[-1].get("text") or "")
    terms = " ".join(words)
    record["_terms"] = terms if to_db is None else fts5_terms(terms)  # on SQLite: as items_fts stores them
    binary = search_binary(terms, words) if to_db is None else None
    record["_tsv"], record["_pairs"] = binary if binary is not None else (None, None)
    at = to_db or _same
    record["_at"] = (at(published) if published else None, at(first_seen), at(kept[-1]["_fetched"]),
                     at(published or first_seen))
    for v in kept:
        v["_at"] = at(v["_fetched"])
    for key in ("title", "text", "versions", "matches"):
        record.pop(key, None)
    return record


def _time_to_db(backend: str) -> Callable[[datetime], Any] | None:
    """How a time goes to ``backend``'s driver (None: as it is). SQLite stores naive UTC text
    in SQLAlchemy's format (tests/test_import_speed.py checks it against SQLAlchemy's own)."""
    return sqlite_time if backend == "sqlite" else None


def sqlite_time(value: datetime) -> str:
    """A UTC column's value on SQLite, as ``models.UtcDateTime`` stores it."""
    v = value.astimezone(UTC)
    return (f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}."
            f"{v.microsecond:06d}")


def _same(value: datetime) -> datetime:
    return value


# Terms that PostgreSQL's default parser reads as one token each, unchanged by the 'simple'
# configuration: ASCII lower-case letters and digits, and Russian lower-case letters.
_NOT_PLAIN = re.compile(r"[^0-9a-z\u0430-\u044f]")
_MAX_LEXEME = 1000  # bytes (to_tsvector drops words over 2,047 bytes)
_MAX_POSITION = 16383  # to_tsvector clamps positions above this
_MAX_POSITIONS = 255  # positions kept per lexeme
_END_AND_COUNT = tuple(b"\0" + n.to_bytes(2, "big") for n in range(_MAX_POSITIONS + 1))  # a lexeme's end, its positions
_INT4_OID = 23
_EMPTY_INT4_ARRAY = struct.pack("!iiI", 0, 0, _INT4_OID)
_LEXICON_MAX = 200_000  # distinct words remembered; forgotten when full


class _Lexicon:
    """The distinct words a process has prepared, numbered: each word's bytes as a lexeme,
    whether PostgreSQL could read it otherwise (outside the plain alphabet, or too long), and
    its hash for the index of pairs. An item's words become numbers in one pass of dictionary
    look-ups, and numpy does the per-word work of the tsvector and the pairs."""

    def __init__(self) -> None:
        self._forget()

    def _forget(self) -> None:
        self.numbers: dict[str, int] = {}
        self.lexemes: list[bytes] = []
        self.odd = np.zeros(1024, dtype=np.bool_)
        self.hashes = np.zeros(1024, dtype=np.uint64)

    def encode(self, words: list[str]) -> npt.NDArray[np.intp]:
        if len(self.numbers) >= _LEXICON_MAX:
            self._forget()  # numbers are only used within one call
        numbers = list(map(self.numbers.get, words))
        if None in numbers:
            for at, number in enumerate(numbers):
                if number is None:
                    known = self.numbers.get(words[at])  # earlier in these words
                    numbers[at] = self._add(words[at]) if known is None else known
        return np.array(numbers, dtype=np.intp)

    def _add(self, word: str) -> int:
        number = len(self.lexemes)
        if number == len(self.odd):
            self.odd = np.concatenate([self.odd, np.zeros_like(self.odd)])
            self.hashes = np.concatenate([self.hashes, np.zeros_like(self.hashes)])
        encoded = word.encode()
        self.lexemes.append(encoded)
        self.odd[number] = _NOT_PLAIN.search(word) is not None or len(encoded) > _MAX_LEXEME
        self.hashes[number] = word_hash(word)
        self.numbers[word] = number
        return number


_LEXICON = _Lexicon()


def search_binary(terms: str, words: list[str] | None = None) -> tuple[bytes, bytes] | None:
    """PostgreSQL's full-text row of ``terms`` in binary format, for ``COPY … (FORMAT BINARY)``:
    the tsvector (``tsvectorrecv``: the number of lexemes, then each lexeme, NUL, its number of
    positions and the positions, all big-endian; the server sorts the lexemes), equal to
    ``to_tsvector('simple', terms)``, so the server only copies it in instead of parsing text
    (a literal cost it 2–3× as much, ``to_tsvector`` 4×); and the hashes of its adjacent word
    pairs as an ``int4[]`` (``storage.search.pair_hashes``). None when a term is outside the
    plain alphabet or a limit is reached, and the server must parse it
    (tests/test_import_speed.py and tests/test_search_pairs.py check the equalities).
    ``words``: ``terms.split()``, when already at hand."""
    if words is None:
        words = terms.split()
    count = len(words)
    if count > _MAX_POSITION:
        return None
    if not count:
        return bytes(4), _EMPTY_INT4_ARRAY
    numbers = _LEXICON.encode(words)
    if _LEXICON.odd[numbers].any():
        return None
    order = np.argsort(numbers, kind="stable")  # each word's positions together, ascending
    grouped = numbers[order]
    starts = np.flatnonzero(np.concatenate(([True], grouped[1:] != grouped[:-1])))
    counts = np.diff(np.append(starts, count))
    if counts.max() > _MAX_POSITIONS:
        return None
    positions = (order + 1).astype(">u2").tobytes()
    ends = starts + counts
    parts: list[bytes] = [b""] * (3 * len(starts) + 1)  # the count, then each lexeme's three parts
    parts[0] = len(starts).to_bytes(4, "big")
    parts[1::3] = list(map(_LEXICON.lexemes.__getitem__, grouped[starts].tolist()))
    parts[2::3] = list(map(_END_AND_COUNT.__getitem__, counts.tolist()))
    parts[3::3] = list(map(positions.__getitem__, map(slice, (2 * starts).tolist(), (2 * ends).tolist())))
    tsvector = b"".join(parts)
    if count == 1:
        return tsvector, _EMPTY_INT4_ARRAY
    hashes = _LEXICON.hashes[numbers]
    pairs = np.sort((hashes[:-1] * PAIR_MULTIPLIER + hashes[1:]) & 0xFFFFFFFF)
    pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))]  # each once (np.unique: 8× as long)
    elements = np.empty(2 * len(pairs), dtype=">u4")  # each: its length (4), its value
    elements[0::2] = 4
    elements[1::2] = pairs
    return tsvector, struct.pack("!iiIii", 1, 0, _INT4_OID, len(pairs), 1) + elements.tobytes()


def tsvector_binary(terms: str) -> bytes | None:
    """The tsvector of ``search_binary`` alone."""
    both = search_binary(terms)
    return None if both is None else both[0]


_COPY_HEADER = b"PGCOPY\n\xff\r\n\0" + bytes(8)  # signature, flags, no header extension
_ID_AND_LENGTH = struct.Struct("!hiqi")  # the number of fields; an 8-byte bigint, the id; the next field's length


def copy_binary(rows: list[tuple[int, bytes]]) -> bytes:
    """``COPY … (FORMAT BINARY)`` data of rows of a bigint and a value in binary format."""
    pack = _ID_AND_LENGTH.pack
    return b"".join([_COPY_HEADER, *[pack(2, 8, i, len(v)) + v for i, v in rows], b"\xff\xff"])


def copy_binary_search(rows: list[tuple[int, bytes, bytes]]) -> bytes:
    """``COPY items_search (item_id, terms, pairs) (FORMAT BINARY)`` data: a bigint and two
    values in binary format."""
    pack = _ID_AND_LENGTH.pack
    return b"".join([_COPY_HEADER, *[pack(3, 8, i, len(v)) + v + len(p).to_bytes(4, "big") + p
                                     for i, v, p in rows], b"\xff\xff"])


def _time(value: Any, key: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise ImportLineError(f"{key}: {value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _versions(record: dict[str, Any]) -> list[dict[str, Any]]:
    versions = record.get("versions")
    if versions is None:
        versions = [{"version": record.get("version", 1), "title": record.get("title", ""),
                     "text": record.get("text", ""), "content_hash": record.get("content_hash"),
                     "fetched_at": record.get("first_seen_at")}]
    if not isinstance(versions, list) or not versions:
        raise ImportLineError("versions: expected a non-empty list")
    for v in versions:
        if not isinstance(v, dict) or not v.get("content_hash"):
            raise ImportLineError("versions: every version needs a content_hash")
    return sorted(versions, key=lambda v: int(v.get("version") or 0))


def _check(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ImportLineError("expected a JSON object")
    for key in ("source", "url", "canonical_url"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise ImportLineError(f"{key}: missing or not a string")
    if record.get("guid") is not None and not isinstance(record["guid"], str):
        raise ImportLineError("guid: expected a string")
    sources = record.get("sources") or [record["source"]]  # exports before `sources` had one
    if not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources):
        raise ImportLineError("sources: expected a list of source ids")
    record["_sources"] = list(dict.fromkeys([record["source"], *sources]))
    return record


def _matches(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ImportLineError("matches: expected a list")
    out = []
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("organisation"), str):
            raise ImportLineError("matches: every match needs an organisation")
        out.append({"organisation": m["organisation"], "alias": str(m.get("alias", "")),
                    "form": str(m.get("form", "")), "snippet": str(m.get("snippet", "")),
                    "start": int(m.get("start", 0)), "end": int(m.get("end", 0))})
    return out
