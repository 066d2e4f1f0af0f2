"""Full-text search terms and queries: stemmed words, "phrases", OR and -exclusion, compiled
to SQLite FTS5 or PostgreSQL tsquery so both backends answer the same way."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache

import Stemmer

from storage.fts_fold import DROPPED, SOURCE, TARGET

_WORD = re.compile(r"\w+", re.UNICODE)
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_QUERY_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')


@cache
def _stemmer(language: str) -> Stemmer.Stemmer:
    return Stemmer.Stemmer(language)


def _stem(word: str) -> str:
    if word.isdigit():
        return word
    language = "russian" if _CYRILLIC.search(word) else "english"
    return str(_stemmer(language).stemWord(word))


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` with ё folded to е and soft hyphens dropped."""
    text = text.replace("\u00ad", "").lower().replace("ё", "е")
    return _WORD.findall(text)


_STEMS: dict[str, str] = {}
_STEMS_MAX = 200_000  # distinct words remembered (~30 MB at most); cleared when full


def stems(text: str) -> list[str]:
    """The stems of ``text``'s words (each distinct word stemmed once: most are remembered)."""
    found = words(text)
    out: list[str | None] = list(map(_STEMS.get, found))
    if None in out:
        known = _STEMS
        for at, stem in enumerate(out):
            if stem is None:
                word = found[at]
                stem = known.get(word)  # earlier in this text
                if stem is None:
                    if len(known) >= _STEMS_MAX:
                        known.clear()
                    stem = known[word] = _stem(word)
                out[at] = stem
    return out  # type: ignore[return-value]  # every None was replaced


def search_words(*texts: str) -> list[str]:
    """The stems of every word of ``texts``, in order: an item's indexed words."""
    out: list[str] = []
    for text in texts:
        out += stems(text)
    return out


def search_terms(*texts: str) -> str:
    """The indexed form of an item: its stemmed words, space separated."""
    return " ".join(search_words(*texts))


# Words that PostgreSQL's default parser reads as one token each, unchanged by the 'simple'
# configuration (ASCII lower-case letters and digits, Russian lower-case letters), so that a
# word's position in ``terms`` is its position in ``to_tsvector('simple', terms)``.
_NOT_PLAIN = re.compile(r"[^0-9a-z\u0430-\u044f ]")
_MAX_WORD = 1000  # characters (to_tsvector drops words over 2,047 bytes)
_MAX_POSITION = 16383  # to_tsvector gives every later word this position

# The index of adjacent word pairs holds each pair "w1 w2" as a 32-bit hash (a GIN key of an
# int4[] costs the server about a third of a text key's: bench/README.md), computed the same
# way here and by the server's ``search_pair_hashes(tsvector)`` (migration 0009): a word's hash is
# the first 4 bytes of the SHA-256 of its UTF-8 (big-endian, unsigned), a pair's is
# (h1 * PAIR_MULTIPLIER + h2) mod 2**32 read as a signed int4. Two pairs of one hash only
# widen a phrase's candidates: the tsvector's positions are checked after them.
PAIR_MULTIPLIER = 1_000_003
_MASK = 0xFFFFFFFF
_WORD_HASHES: dict[str, int] = {}


def word_hash(word: str) -> int:
    """A word's 32-bit hash (unsigned), as the server's ``search_pair_hash`` computes it."""
    known = _WORD_HASHES.get(word)
    if known is None:
        if len(_WORD_HASHES) >= _STEMS_MAX:
            _WORD_HASHES.clear()
        known = _WORD_HASHES[word] = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big")
    return known


def pair_hash(first: str, second: str) -> int:
    """The int4 key of the pair "first second" in ``items_search.pairs``."""
    return _int4((word_hash(first) * PAIR_MULTIPLIER + word_hash(second)) & _MASK)


def _int4(value: int) -> int:
    """An unsigned 32-bit value as the signed int4 of the same bits."""
    return value - (1 << 32) if value >= 1 << 31 else value


def _plain_words(terms: str) -> list[str] | None:
    if _NOT_PLAIN.search(terms) is not None:
        return None
    words = terms.split()
    if len(words) > _MAX_POSITION or (words and max(map(len, words)) > _MAX_WORD):
        return None
    return words


def pair_hashes(terms: str) -> list[int] | None:
    """The hashes of the adjacent word pairs of ``terms`` (each once, ascending) for the index
    of pairs (``items_search.pairs``), which narrows a phrase to the items holding its pairs
    before its positions are checked. They equal the hashes of the pairs that the positions of
    ``to_tsvector('simple', terms)`` give (the server's ``search_pair_hashes(tsvector)``, which the
    writers use when this returns None: when a word is outside the plain alphabet or a limit
    is reached, and the server's parse could differ). Every writer of ``items_search`` calls
    this (``search_pairs``) or ``storage.import_prep.search_binary``."""
    words = _plain_words(terms)
    if words is None:
        return None
    hashes = [word_hash(w) for w in words]
    pairs = {(a * PAIR_MULTIPLIER + b) & _MASK for a, b in zip(hashes, hashes[1:])}  # noqa: B905
    return sorted(map(_int4, pairs))


def search_pairs(terms: str) -> str | None:
    """``pair_hashes`` as a PostgreSQL ``int4[]`` literal (the driver adapts a list of a few
    hundred values several times slower than a literal)."""
    pairs = pair_hashes(terms)
    return None if pairs is None else "{" + ",".join(map(str, pairs)) + "}"


@dataclass
class Query:
    """A parsed query: every group must match (a group is alternatives joined by OR);
    no excluded phrase may match. A phrase is a sequence of stems."""

    groups: list[list[list[str]]] = field(default_factory=list)
    excluded: list[list[str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.groups and not self.excluded


def parse_query(text: str) -> Query:
    """Parse words, "phrases", ``OR`` between terms and ``-term`` exclusions (``AND`` is implied)."""
    query = Query()
    join_next = False
    for match in _QUERY_TOKEN.finditer(text):
        negate, phrase, bare = match.group(1), match.group(2), match.group(3)
        if bare == "OR":
            join_next = bool(query.groups)
            continue
        if bare == "AND":  # the default between terms anyway
            continue
        if bare is not None and bare.startswith("-") and len(bare) > 1:
            negate, bare = "-", bare[1:]
        terms = stems(phrase if phrase is not None else bare or "")
        if not terms:
            continue
        if negate:
            query.excluded.append(terms)
        elif join_next:
            query.groups[-1].append(terms)
        else:
            query.groups.append([terms])
        join_next = False
    return query


# SQLite's full-text table reads terms with FTS5's ``ascii`` tokenizer (spaces separate them;
# any non-ASCII character is part of a term), a third of the cost of ``unicode61`` per row;
# the folding unicode61 did (diacritics removed: ş → s, é → e; ``_`` separates) is done here,
# on the terms stored and on the terms queried, so searches find what they found before.
_FOLD = str.maketrans(SOURCE, TARGET, DROPPED)
# Characters unicode61 keeps as they are (Latin and Russian lower-case letters, digits; the fold
# table holds none of them): terms of only these, most terms, need no look-up per character.
UNFOLDED = "0-9a-z\u0430-\u044f "
_NOT_UNFOLDED = re.compile(f"[^{UNFOLDED}]")


def fts5_terms(terms: str) -> str:
    """``terms`` as SQLite's full-text table stores and queries them (folded as FTS5's
    ``unicode61 remove_diacritics 2`` tokenizer would fold them)."""
    return terms.translate(_FOLD) if _NOT_UNFOLDED.search(terms) is not None else terms


def _fts5_phrase(terms: list[str]) -> str:
    return '"' + fts5_terms(" ".join(terms)) + '"'


def fts5_match(query: Query) -> str | None:
    """The FTS5 MATCH expression of the positive part, or None when there is none."""
    parts = []
    for group in query.groups:
        alternatives = " OR ".join(_fts5_phrase(p) for p in group)
        parts.append(f"({alternatives})" if len(group) > 1 else alternatives)
    return " AND ".join(parts) or None


def fts5_excluded(query: Query) -> str | None:
    """The FTS5 MATCH expression that any excluded phrase satisfies, or None."""
    return " OR ".join(_fts5_phrase(p) for p in query.excluded) or None


def _ts_phrase(terms: list[str]) -> str:
    quoted = [f"'{t}'" for t in terms]
    return " <-> ".join(quoted) if len(quoted) > 1 else quoted[0]


def tsquery(query: Query) -> str | None:
    """A PostgreSQL ``to_tsquery('simple', …)`` string for the whole query, or None."""
    parts = []
    for group in query.groups:
        alternatives = " | ".join(f"({_ts_phrase(p)})" for p in group)
        parts.append(f"({alternatives})")
    parts.extend(f"!({_ts_phrase(p)})" for p in query.excluded)
    return " & ".join(parts) or None


def phrase_pairs(query: Query) -> list[list[list[int]]]:
    """What ``items_search.pairs`` must hold for ``query`` to match: for each positive group
    whose every alternative is a phrase of plain words (a single word or another alphabet
    narrows nothing), the pair hashes of each alternative (a row holds all of one
    alternative's)."""
    out = []
    for group in query.groups:
        if all(len(p) > 1 and _plain_words(" ".join(p)) is not None for p in group):
            out.append([sorted({pair_hash(a, b) for a, b in zip(p, p[1:])}) for p in group])  # noqa: B905
    return out


def _has_phrase(terms: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    first = phrase[0]
    return any(terms[i] == first and terms[i:i + n] == phrase
               for i in range(len(terms) - n + 1))


def query_admits(query: Query, *texts: str) -> bool:
    """True when ``texts`` satisfy ``query`` as the search would (every group has a phrase
    found, no excluded phrase found): an alert channel's ``query`` filter, without the index."""
    terms = [s for text in texts for s in stems(text)]
    return all(any(_has_phrase(terms, p) for p in group) for group in query.groups) \
        and not any(_has_phrase(terms, p) for p in query.excluded)
