"""Finding tracked organisations in text: aliases compiled to token-key tries, any case form.

How it works. Text and aliases are cut into the same word tokens (a CJK character is a
token of its own). Each distinct token is analysed once (cached) into *keys*:

* ``A`` + the token as written, for tokens without lower-case letters (acronyms; Latin and
  Cyrillic look-alike letters inside one token are folded to the token's main script);
* ``s`` + a Snowball stem of the lower-cased token and of each of its pymorphy3 lemmas
  (Russian), so every grammatical case of a name maps to the keys of its base form;
* ``w`` + the lower-cased token, and ``p`` + any alias word it starts with (Kazakh and
  Azerbaijani names, whose last word takes agglutinated endings: ``Təşkilatının``).

An alias is a sequence of keys in a trie; a match is a run of consecutive tokens whose keys
walk the trie to an alias, with only spaces, hyphens or quotes between them. ``ё``/``е``,
soft hyphens, zero-width characters and Unicode spaces make no difference.
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import Stemmer

if TYPE_CHECKING:
    from pymorphy3 import MorphAnalyzer

    from crawler.organisations import OrganisationSpec

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_INVISIBLE = "\u00ad\u200b\u200c\u200d\u2060\ufeff"
_MARKS = "\u0300-\u036f"
# A word: letters/digits (not "_", not CJK), possibly with combining marks or invisible
# characters inside; or one CJK character.
TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:[{_MARKS}{_INVISIBLE}]+[^\W_{_CJK}]*)*")
# What may separate the words of one name: spaces, hyphens, quotes, invisible characters.
_GAP = re.compile(r"[\s\-\u2010-\u2013'\"\u2018-\u201f\u2039\u203a\u00ab\u00bb"
                  rf"{_INVISIBLE}]*\Z")
_SENTENCE_END = re.compile(r"[\u3002\uff01\uff1f]+|[.!?\u2026]+[\"')\]\u00bb\u201d\u2019]*(?=\s|\Z)"
                           r"|\n[ \t\u00a0]*\n")
_SPACES = re.compile(r"\s+")
_DROP_INVISIBLE = str.maketrans("", "", _INVISIBLE)
# Kazakh Cyrillic and Azerbaijani/Turkish Latin letters: an alias with one of them is a
# Turkic name, matched word for word with a tolerant ending on its last word.
_TURKIC = frozenset("ӘәҒғҚқҢңӨөҰұҮүҺһІіƏəĞğİıŞşÇçÖöÜü")
_LATIN_LOOKALIKE = "ABCEHKMOPTXYaceopxyIi"
_CYRILLIC_LOOKALIKE = "АВСЕНКМОРТХУасеорхуІі"
_TO_CYRILLIC = str.maketrans(_LATIN_LOOKALIKE, _CYRILLIC_LOOKALIKE)
_TO_LATIN = str.maketrans(_CYRILLIC_LOOKALIKE, _LATIN_LOOKALIKE)
MAX_ENDING = 6  # letters a Kazakh/Azerbaijani last word may add: ұйымы → ұйымының
SNIPPET_RADIUS = 80
CACHE_SIZE = 1 << 17


@dataclass(frozen=True)
class Match:
    """One mention of an organisation in a text."""

    organisation: str  # organisation id
    alias: str  # the configured alias that matched
    form: str  # the text as found: text[start:end]
    start: int  # offsets into the text given to OrgMatcher.find()
    end: int
    snippet: str  # the sentence around the mention (at most ±80 characters), one line


@dataclass(frozen=True)
class _Entry:
    organisation: str
    phrase: str
    exclude: bool


class _Node:
    __slots__ = ("children", "entries")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.entries: list[_Entry] = []


@dataclass
class _Hit:
    start: int
    end: int
    entries: list[_Entry]


@functools.cache
def _morph() -> MorphAnalyzer:
    """The Russian analyser (loaded once, from the packaged dictionary)."""
    from pymorphy3 import MorphAnalyzer

    return MorphAnalyzer(lang="ru")


def _is_cyrillic(char: str) -> bool:
    return "\u0400" <= char <= "\u04ff"


def fold_lookalikes(word: str) -> str:
    """Write a token that mixes Latin and Cyrillic letters in its main script ("CВМДА")."""
    if word.isascii():
        return word
    cyrillic = sum(1 for char in word if _is_cyrillic(char))
    latin = sum(1 for char in word if char < "\u0300" and char.isalpha())
    if not cyrillic or not latin:
        return word
    return word.translate(_TO_CYRILLIC if cyrillic >= latin else _TO_LATIN)


def clean_token(token: str) -> str:
    """Drop invisible characters, compose (NFKC), fold look-alikes and ё."""
    word = token.translate(_DROP_INVISIBLE)
    if not word.isascii():
        word = fold_lookalikes(unicodedata.normalize("NFKC", word))
        word = word.replace("ё", "е").replace("Ё", "Е")
    return word


def lower_word(word: str) -> str:
    """Lower-case with the Turkic dotted and dotless i both folded to plain ``i``."""
    return word.replace("İ", "i").lower().replace("ı", "i")


def acronym_key(word: str) -> str:
    return "A" + word.replace("İ", "I")


def is_acronym(phrase: str) -> bool:
    """An all-capitals alias (CICA, СВМДА, İƏT): matched in capitals, as whole words."""
    return phrase == phrase.upper() and phrase != phrase.lower()


def is_turkic(phrase: str) -> bool:
    return not _TURKIC.isdisjoint(phrase)


class OrgMatcher:
    """Finds every alias of the given organisations in a text.

    Compile once, call :meth:`find` for every item. Not thread-safe (the Snowball stemmers
    are not): use one matcher per thread.
    """

    def __init__(self, organisations: Sequence[OrganisationSpec]) -> None:
        self._ru = Stemmer.Stemmer("russian")
        self._en = Stemmer.Stemmer("english")
        self._root = _Node()
        self._vocabulary: set[str] = set()
        self._prefixes: list[int] = []
        for spec in organisations:
            for alias in spec.aliases:
                self._add(_Entry(spec.id, alias, exclude=False))
            for phrase in spec.exclude:
                self._add(_Entry(spec.id, phrase, exclude=True))
        self._prefixes.sort()
        self._analyse = functools.lru_cache(maxsize=CACHE_SIZE)(self._token_keys)

    # -- compiling -------------------------------------------------------------------------

    def _add(self, entry: _Entry) -> None:
        keys = self._phrase_keys(entry.phrase, acronym=not entry.exclude)
        if not keys:
            return
        node = self._root
        for key in keys:
            node = node.children.setdefault(key, _Node())
        if entry not in node.entries:
            node.entries.append(entry)
        self._vocabulary.update(keys)

    def _phrase_keys(self, phrase: str, *, acronym: bool) -> list[str]:
        words = [clean_token(token) for token in TOKEN.findall(phrase)]
        if acronym and is_acronym(phrase):
            return [acronym_key(word) for word in words]
        lowered = [lower_word(word) for word in words]
        if is_turkic(phrase):
            last = lowered[-1] if lowered else ""
            if last and len(last) not in self._prefixes:
                self._prefixes.append(len(last))
            return ["w" + word for word in lowered[:-1]] + ["p" + last] if last else []
        return ["s" + self._base_stem(word) for word in lowered]

    def _base_stem(self, word: str) -> str:
        """The stem of an alias word: of its most likely lemma for Russian words."""
        if any(_is_cyrillic(char) for char in word):
            lemma = _morph().parse(word)[0].normal_form.replace("ё", "е")
            return self._ru.stemWord(lemma)
        return self._en.stemWord(word)

    # -- analysing text --------------------------------------------------------------------

    def _token_keys(self, token: str) -> tuple[str, ...]:
        """Every key of one text token that occurs in some alias (usually none)."""
        word = clean_token(token)
        lower = lower_word(word)
        candidates = {"w" + lower, *("s" + stem for stem in self._stems(lower))}
        if word == word.upper():
            candidates.add(acronym_key(word))
        for length in self._prefixes:
            if length > len(lower):
                break
            if len(lower) - length <= MAX_ENDING:
                candidates.add("p" + lower[:length])
        return tuple(key for key in candidates if key in self._vocabulary)

    def _stems(self, lower: str) -> set[str]:
        """The surface stem and, for Russian words, the stems of every lemma."""
        if not any(_is_cyrillic(char) for char in lower):
            return {self._en.stemWord(lower)}
        stems = {self._ru.stemWord(lower)}
        if len(lower) > 2 and _TURKIC.isdisjoint(lower):
            lemmas = {parse.normal_form.replace("ё", "е") for parse in _morph().parse(lower)}
            stems.update(self._ru.stemWords(list(lemmas)))
        return stems

    def _walk(self, keys: Sequence[tuple[str, ...]]) -> list[tuple[int, int, list[_Entry]]]:
        """Token ranges [i, j) whose keys spell a phrase, with the phrase's entries."""
        found: list[tuple[int, int, list[_Entry]]] = []
        roots = self._root.children
        size = len(keys)
        for i, token_keys in enumerate(keys):
            if not token_keys:
                continue
            nodes = [roots[key] for key in token_keys if key in roots]
            j = i + 1
            while nodes:
                found.extend((i, j, node.entries) for node in nodes if node.entries)
                if j >= size or not keys[j]:
                    break
                nodes = [node.children[key] for node in nodes for key in keys[j]
                         if key in node.children]
                j += 1
        return found

    # -- public ----------------------------------------------------------------------------

    def find(self, text: str) -> list[Match]:
        """Every organisation mention in ``text``, sorted by start, without overlaps."""
        keys = list(map(self._analyse, TOKEN.findall(text)))
        found = self._walk(keys)
        if not found:
            return []
        spans = [token.span() for token in TOKEN.finditer(text)]
        hits = [_Hit(spans[i][0], spans[j - 1][1], entries) for i, j, entries in found
                if _joined(text, spans, i, j)]
        return _Resolver(text).resolve(hits)


def _joined(text: str, spans: list[tuple[int, int]], i: int, j: int) -> bool:
    """Whether tokens i..j-1 are separated only by spaces, hyphens or quotes."""
    return all(_GAP.match(text, spans[k][1], spans[k + 1][0]) for k in range(i, j - 1))


class _Resolver:
    """Turns raw hits in one text into matches: vetoes, overlaps, ambiguity, snippets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._ends: list[int] | None = None

    def resolve(self, hits: list[_Hit]) -> list[Match]:
        vetoes = [(hit.start, entry.organisation) for hit in hits for entry in hit.entries
                  if entry.exclude]
        candidates: list[tuple[int, int, dict[str, str]]] = []
        for hit in hits:
            orgs = self._allowed(hit, vetoes)
            if orgs:
                candidates.append((hit.start, hit.end, orgs))
        chosen = _leftmost_longest(candidates)
        return [self._match(org, alias, start, end)
                for start, end, org, alias in _disambiguate(chosen)]

    def _allowed(self, hit: _Hit, vetoes: list[tuple[int, str]]) -> dict[str, str]:
        """Organisation → alias for this hit's aliases not vetoed in the same sentence."""
        orgs: dict[str, str] = {}
        for entry in hit.entries:
            if entry.exclude or entry.organisation in orgs:
                continue
            if any(org == entry.organisation and self._same_sentence(hit.start, position)
                   for position, org in vetoes):
                continue
            orgs[entry.organisation] = entry.phrase
        return orgs

    def _sentence(self, position: int) -> tuple[int, int]:
        if self._ends is None:
            self._ends = [m.end() for m in _SENTENCE_END.finditer(self.text)]
        index = bisect.bisect_right(self._ends, position)
        start = self._ends[index - 1] if index else 0
        end = self._ends[index] if index < len(self._ends) else len(self.text)
        return start, end

    def _same_sentence(self, a: int, b: int) -> bool:
        return self._sentence(a) == self._sentence(b)

    def _match(self, org: str, alias: str, start: int, end: int) -> Match:
        return Match(org, alias, self.text[start:end], start, end, self._snippet(start, end))

    def _snippet(self, start: int, end: int) -> str:
        first, last = self._sentence(start)
        left, right = max(first, start - SNIPPET_RADIUS), min(last, end + SNIPPET_RADIUS)
        if left > first:
            left = _word_start(self.text, left, start)
        if right < last:
            right = _word_end(self.text, right, end)
        piece = _SPACES.sub(" ", self.text[left:right].translate(_DROP_INVISIBLE)).strip()
        return ("…" if left > first else "") + piece + ("…" if right < last else "")


def _word_start(text: str, left: int, limit: int) -> int:
    space = text.find(" ", left, limit)
    return space + 1 if space >= 0 else left


def _word_end(text: str, right: int, limit: int) -> int:
    space = text.rfind(" ", limit, right)
    return space if space >= 0 else right


def _leftmost_longest(
    candidates: list[tuple[int, int, dict[str, str]]],
) -> list[tuple[int, int, dict[str, str]]]:
    """Keep the longest hit at the leftmost start, then the next hit after it, and so on."""
    chosen: list[tuple[int, int, dict[str, str]]] = []
    for start, end, orgs in sorted(candidates, key=lambda c: (c[0], -c[1])):
        if chosen and start < chosen[-1][1]:
            continue
        chosen.append((start, end, orgs))
    return chosen


def _disambiguate(
    chosen: list[tuple[int, int, dict[str, str]]],
) -> list[tuple[int, int, str, str]]:
    """Give an alias shared by several organisations (Azerbaijani İƏT: OIC and ECO) to the
    one named unambiguously just before it (as a name is spelled out, then abbreviated), else
    just after it; drop it when the text names none of them."""
    sure = [(start, end, next(iter(orgs))) for start, end, orgs in chosen if len(orgs) == 1]
    result: list[tuple[int, int, str, str]] = []
    for start, end, orgs in chosen:
        org = next(iter(orgs)) if len(orgs) == 1 else _nearest(sure, start, end, orgs)
        if org is not None:
            result.append((start, end, org, orgs[org]))
    return result


def _nearest(sure: list[tuple[int, int, str]], start: int, end: int,
             orgs: dict[str, str]) -> str | None:
    before = [(start - s_end, org) for _, s_end, org in sure if org in orgs and s_end <= start]
    after = [(s_start - end, org) for s_start, _, org in sure if org in orgs and s_start >= end]
    best = min(before or after, default=None)
    return best[1] if best else None


def organisation_ids(matches: Iterable[Match]) -> list[str]:
    """The sorted, unique organisation ids of some matches."""
    return sorted({match.organisation for match in matches})
