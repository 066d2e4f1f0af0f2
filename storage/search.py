"""Full-text search terms and queries: stemmed words, "phrases", OR and -exclusion, compiled
to SQLite FTS5 or PostgreSQL tsquery so both backends answer the same way."""

from __future__ import annotations

import re
import struct
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
    known = _STEMS
    out = []
    for word in words(text):
        stem = known.get(word)
        if stem is None:
            if len(known) >= _STEMS_MAX:
                known.clear()
            stem = known[word] = _stem(word)
        out.append(stem)
    return out


def search_terms(*texts: str) -> str:
    """The indexed form of an item: its stemmed words, space separated."""
    return " ".join(s for text in texts for s in stems(text))


# Words that PostgreSQL's default parser reads as one token each, unchanged by the 'simple'
# configuration (ASCII lower-case letters and digits, Russian lower-case letters), so that a
# word's position in ``terms`` is its position in ``to_tsvector('simple', terms)``.
_NOT_PLAIN = re.compile(r"[^0-9a-z\u0430-\u044f ]")
_MAX_WORD = 1000  # characters (to_tsvector drops words over 2,047 bytes)
_MAX_POSITION = 16383  # to_tsvector gives every later word this position


def _pairs(terms: str) -> list[str] | None:
    if _NOT_PLAIN.search(terms) is not None:
        return None
    words = terms.split()
    if len(words) > _MAX_POSITION or (words and max(map(len, words)) > _MAX_WORD):
        return None
    return list(dict.fromkeys(map(" ".join, zip(words, words[1:]))))  # noqa: B905


def search_pairs(terms: str) -> str | None:
    """The adjacent word pairs of ``terms`` ("w1 w2", each once) as a PostgreSQL ``text[]``
    literal, for its index of pairs (``items_search.pairs``), which narrows a phrase to the
    items holding its pairs before its positions are checked. They equal the pairs that the
    positions of ``to_tsvector('simple', terms)`` give (the server's ``search_pairs(tsvector)``,
    which the writers use when this returns None: when a word is outside the plain alphabet or
    a limit is reached, and the server's parse could differ). Computed here so imports need not
    parse on the server; every writer of ``items_search`` calls this (or ``search_pairs_binary``).
    A literal, not a list: the driver adapts a list of a few hundred strings 6× slower than a
    whole import row (plain words need no escaping)."""
    pairs = _pairs(terms)
    if pairs is None:
        return None
    return '{"' + '","'.join(pairs) + '"}' if pairs else "{}"


_TEXT_OID = 25


def search_pairs_binary(terms: str) -> bytes | None:
    """``search_pairs`` in PostgreSQL's binary format of a ``text[]`` (for ``COPY … BINARY``)."""
    pairs = _pairs(terms)
    if pairs is None:
        return None
    if not pairs:
        return struct.pack("!iiI", 0, 0, _TEXT_OID)
    encoded = [p.encode() for p in pairs]
    return b"".join([struct.pack("!iiIii", 1, 0, _TEXT_OID, len(encoded), 1),
                     *[struct.pack("!i", len(e)) + e for e in encoded]])


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


def phrase_pairs(query: Query) -> list[list[list[str]]]:
    """What ``items_search.pairs`` must hold for ``query`` to match: for each positive group
    whose every alternative is a phrase of plain words (a single word or another alphabet
    narrows nothing), the pairs of each alternative (a row holds all of one alternative's)."""
    out = []
    for group in query.groups:
        pairs = [[f"{a} {b}" for a, b in zip(p, p[1:])] for p in group]  # noqa: B905
        if all(p and not _NOT_PLAIN.search(" ".join(a)) and max(map(len, a)) <= _MAX_WORD
               for p, a in zip(pairs, group)):  # noqa: B905
            out.append([list(dict.fromkeys(p)) for p in pairs])
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
