"""Finding tracked organisations in text: aliases compiled to token-key tries, any case form."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, count
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
# The same, captured: split() gives [gap, token, gap, token, ..., gap].
_PIECES = re.compile(f"({TOKEN.pattern})")
# What may separate the words of one name: spaces, hyphens, quotes, invisible characters.
_GAP = re.compile(r"[\s\-\u2010-\u2013'\"\u2018-\u201f\u2039\u203a\u00ab\u00bb"
                  rf"{_INVISIBLE}]*\Z")
_SENTENCE_END = re.compile(r"[\u3002\uff01\uff1f]+|[.!?\u2026]+[\"')\]\u00bb\u201d\u2019]*(?=\s|\Z)"
                           r"|\n[ \t\u00a0]*\n")
_SPACES = re.compile(r"\s+")
_DROP_INVISIBLE = str.maketrans("", "", _INVISIBLE)
_HAS_INVISIBLE = re.compile(f"[{_INVISIBLE}]")
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


class _KeyCache(dict[str, tuple[str, ...]]):
    """Token → keys, filled on demand; emptied when full (cheaper than an LRU per lookup)."""

    def __init__(self, analyse: Callable[[str], tuple[str, ...]], limit: int) -> None:
        super().__init__()
        self._analyse = analyse
        self._limit = limit

    def __missing__(self, token: str) -> tuple[str, ...]:
        if len(self) >= self._limit:
            self.clear()
        keys = self[token] = self._analyse(token)
        return keys


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


_CYRILLIC = re.compile("[\u0400-\u04ff]")
_LATIN = re.compile("[A-Za-z\u00c0-\u02af]")


def _is_cyrillic(char: str) -> bool:
    return "\u0400" <= char <= "\u04ff"


def fold_lookalikes(word: str) -> str:
    """Write a token that mixes Latin and Cyrillic letters in its main script ("CВМДА")."""
    if word.isascii() or not (_CYRILLIC.search(word) and _LATIN.search(word)):
        return word
    cyrillic = sum(1 for char in word if _is_cyrillic(char))
    latin = sum(1 for char in word if char < "\u0300" and char.isalpha())
    return word.translate(_TO_CYRILLIC if cyrillic >= latin else _TO_LATIN)


def clean_token(token: str) -> str:
    """Drop invisible characters, compose (NFKC), fold look-alikes and ё."""
    word = token.translate(_DROP_INVISIBLE) if _HAS_INVISIBLE.search(token) else token
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

    How it works. Text and aliases are cut into the same word tokens (a CJK character is a
    token of its own). Each distinct token is analysed once (cached) into *keys*:

    * ``A`` + the token as written, for tokens without lower-case letters (acronyms; Latin and
      Cyrillic look-alike letters inside one token are folded to the token's main script);
    * ``s`` + the stem of an alias word's lemma, for a text token whose Snowball stem is the
      stem of some form of that word: pymorphy3 generates every form of every Russian alias
      word once, at compile time, so each grammatical case ("Совещании", "Кубка") leads to
      the key of the base form, and the text side needs only one Snowball stem per token;
    * ``w`` + the lower-cased token, and ``p`` + any alias word it starts with (Kazakh and
      Azerbaijani names, whose last word takes agglutinated endings: ``Təşkilatının``).

    An alias is a sequence of keys in a trie; a match is a run of consecutive tokens whose keys
    walk the trie to an alias, with only spaces, hyphens or quotes between them. ``ё``/``е``,
    soft hyphens, zero-width characters and Unicode spaces make no difference.
    """

    def __init__(self, organisations: Sequence[OrganisationSpec]) -> None:
        self._ru = Stemmer.Stemmer("russian")
        self._en = Stemmer.Stemmer("english")
        self._root = _Node()
        self._vocabulary: set[str] = set()
        self._stem_keys: dict[str, set[str]] = {}  # Snowball stem of a text word → "s" keys
        self._prefixes: list[int] = []
        for spec in organisations:
            for alias in spec.aliases:
                self._add(_Entry(spec.id, alias, exclude=False))
            for phrase in spec.exclude:
                self._add(_Entry(spec.id, phrase, exclude=True))
        self._prefixes.sort()
        self._cache = _KeyCache(self._token_keys, CACHE_SIZE)

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
        """The stem of an alias word, registered under the stems of all its forms.

        A Russian word's key is the stem of its most likely lemma; every form of every
        lexeme pymorphy3 knows for it maps to that key ("кубка" → "кубок"), so the text
        side needs only a Snowball stem per token.
        """
        if not _CYRILLIC.search(word):
            stem = self._en.stemWord(word)
            self._stem_keys.setdefault(stem, set()).add("s" + stem)
            return stem
        parses = _morph().parse(word)
        stem = self._ru.stemWord(parses[0].normal_form.replace("ё", "е"))
        forms = {form.word.replace("ё", "е") for parse in parses for form in parse.lexeme}
        for form_stem in self._ru.stemWords([word, *forms]):
            self._stem_keys.setdefault(form_stem, set()).add("s" + stem)
        return stem

    # -- analysing text --------------------------------------------------------------------

    def _token_keys(self, token: str) -> tuple[str, ...]:
        """Every key of one text token that occurs in some alias (usually none)."""
        word = clean_token(token)
        lower = lower_word(word)
        stemmer = self._ru if _CYRILLIC.search(lower) else self._en
        keys = set(self._stem_keys.get(stemmer.stemWord(lower), ()))
        if "w" + lower in self._vocabulary:
            keys.add("w" + lower)
        if word == word.upper() and acronym_key(word) in self._vocabulary:
            keys.add(acronym_key(word))
        for length in self._prefixes:
            if length > len(lower):
                break
            if len(lower) - length <= MAX_ENDING and "p" + lower[:length] in self._vocabulary:
                keys.add("p" + lower[:length])
        return tuple(keys)

    def _walk(self, keys: Sequence[tuple[str, ...]]) -> list[tuple[int, int, list[_Entry]]]:
        """Token ranges [i, j) whose keys spell a phrase, with the phrase's entries."""
        found: list[tuple[int, int, list[_Entry]]] = []
        roots = self._root.children
        size = len(keys)
        for i in compress(count(), keys):
            nodes = [roots[key] for key in keys[i] if key in roots]
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
        pieces = _PIECES.split(text)
        keys = list(map(self._cache.__getitem__, pieces[1::2]))
        found = self._walk(keys)
        if not found:
            return []
        starts = _token_starts(pieces, sorted({i for i, _, _ in found}))
        hits = [_Hit(starts[i], starts[i] + sum(map(len, pieces[2 * i + 1:2 * j])), entries)
                for i, j, entries in found if _joined(pieces, i, j)]
        return _Resolver(text).resolve(hits)


def _token_starts(pieces: list[str], tokens: list[int]) -> dict[int, int]:
    """Start offsets of some tokens (ascending numbers) from split() pieces."""
    starts: dict[int, int] = {}
    offset = position = 0
    for token in tokens:
        piece = 2 * token + 1
        offset += sum(map(len, pieces[position:piece]))
        position = piece
        starts[token] = offset
    return starts


def _joined(pieces: list[str], i: int, j: int) -> bool:
    """Whether tokens i..j-1 are separated only by spaces, hyphens or quotes."""
    return all(_GAP.match(pieces[2 * k]) for k in range(i + 1, j))


class _Resolver:
    """Turns raw hits in one text into matches: vetoes, overlaps, ambiguity, snippets."""

    def __init__(self, text: str) -> None:
        self.text = text

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

    def _same_sentence(self, a: int, b: int) -> bool:
        """Whether no sentence ends between two positions."""
        low, high = min(a, b), max(a, b)
        return _SENTENCE_END.search(self.text, low, high) is None

    def _match(self, org: str, alias: str, start: int, end: int) -> Match:
        return Match(org, alias, self.text[start:end], start, end, self._snippet(start, end))

    def _snippet(self, start: int, end: int) -> str:
        """The sentence around [start, end), at most SNIPPET_RADIUS characters either side."""
        text = self.text
        left = max(0, start - SNIPPET_RADIUS)
        stops = [m.end() for m in _SENTENCE_END.finditer(text, left, start)]
        cut_left = not stops and left > 0
        left = stops[-1] if stops else _word_start(text, left, start) if cut_left else left
        right = min(len(text), end + SNIPPET_RADIUS)
        stop = _SENTENCE_END.search(text, end, right)
        cut_right = stop is None and right < len(text)
        right = stop.end() if stop else _word_end(text, right, end) if cut_right else right
        piece = _SPACES.sub(" ", text[left:right].translate(_DROP_INVISIBLE)).strip()
        return ("…" if cut_left else "") + piece + ("…" if cut_right else "")


def _word_start(text: str, left: int, limit: int) -> int:
    """The first word start at or after ``left`` (before ``limit``)."""
    space = _SPACES.search(text, left, limit)
    return space.end() if space else left


def _word_end(text: str, right: int, limit: int) -> int:
    """The last word end at or before ``right`` (after ``limit``)."""
    spaces = [m.start() for m in _SPACES.finditer(text, limit, right)]
    return spaces[-1] if spaces else right


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
