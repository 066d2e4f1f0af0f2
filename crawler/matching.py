"""Finding tracked organisations in text: aliases compiled to token-key tries, any case form."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from itertools import compress, count
from typing import TYPE_CHECKING

import Stemmer

from crawler.evidence import MIN_COUNTED, Entry, Hit, Match, Resolver
from crawler.organisations import is_acronym

if TYPE_CHECKING:
    from pymorphy3 import MorphAnalyzer

    from crawler.organisations import OrganisationSpec

__all__ = ["Analysis", "Match", "OrgMatcher", "organisation_ids", "russian_analysis"]

# What a Russian alias word compiles to: the Snowball stem of its most likely lemma, and the
# Snowball stems of the word and of every form of every lexeme pymorphy3 knows for it.
Analysis = tuple[str, tuple[str, ...]]

# CJK ideographs, kana and Hangul: each character is a word of its own, so an acronym glued
# to them ("によってEAEU条約") is still a whole word.
_CJK = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
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
_DROP_INVISIBLE = str.maketrans("", "", _INVISIBLE)
_HAS_INVISIBLE = re.compile(f"[{_INVISIBLE}]")
# Kazakh Cyrillic and Azerbaijani/Turkish Latin letters: an alias with one of them is a
# Turkic name, matched word for word with a tolerant ending on its last word.
_TURKIC = frozenset("ӘәҒғҚқҢңӨөҰұҮүҺһІіƏəĞğİıŞşÇçÖöÜü")
_LATIN_LOOKALIKE = "ABCEHKMOPTXYaceopxyIi"
_CYRILLIC_LOOKALIKE = "АВСЕНКМОРТХУасеорхуІі"
_TO_CYRILLIC = str.maketrans(_LATIN_LOOKALIKE, _CYRILLIC_LOOKALIKE)
_TO_LATIN = str.maketrans(_CYRILLIC_LOOKALIKE, _LATIN_LOOKALIKE)
# A token whose lower-case head runs into an all-capitals tail ("безопасностиОДКБ"): split
# in two when the tail is an acronym alias, and only then.
_GLUED = re.compile(r"(.*[a-zà-ÿа-яёәғқңөұүһіəğışçöü]{3})([A-ZА-ЯЁӘҒҚҢӨҰҮҺІƏĞİŞÇÖÜ]{2,})")
MIN_PREFIX = 4  # shortest context word matched with any ending
MAX_ENDING = 6  # letters a Kazakh/Azerbaijani last word may add: ұйымы → ұйымының
CACHE_SIZE = 1 << 17


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
        self.entries: list[Entry] = []


@functools.cache
def _morph() -> MorphAnalyzer:
    """The Russian analyser (loaded once, from the packaged dictionary)."""
    from pymorphy3 import MorphAnalyzer

    return MorphAnalyzer(lang="ru")


def release_morphology() -> None:
    """Free the Russian analyser (~13 MiB of dictionaries): a compiled matcher no longer needs
    it (a crawl process builds its one matcher, then gives the memory to the round's data). The
    analyser's objects form reference cycles, so only a full collection frees them; it is cheap
    where the imports were frozen first (``gc.freeze``, as ``python -m crawler`` does). Nothing
    to do when it was never loaded (every word came from crawler.morphology's cache)."""
    if not _morph.cache_info().currsize:
        return
    import gc

    _morph.cache_clear()
    gc.collect()


def russian_analysis(word: str, stemmer: Stemmer.Stemmer) -> Analysis:
    """A lower-cased Cyrillic alias word's :data:`Analysis`, from pymorphy3 (``stemmer``: a
    Russian Snowball stemmer)."""
    parses = _morph().parse(word)
    stem: str = stemmer.stemWord(parses[0].normal_form.replace("ё", "е"))  # untyped
    forms = {form.word.replace("ё", "е") for parse in parses for form in parse.lexeme}
    form_stems: list[str] = stemmer.stemWords([word, *sorted(forms)])
    return stem, tuple(sorted(set(form_stems)))


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

    def __init__(self, organisations: Sequence[OrganisationSpec],
                 analyse: Callable[[str], Analysis] | None = None) -> None:
        """:param analyse: a Russian alias word's analysis (default: ``russian_analysis`` with
            pymorphy3; a crawl process passes ``crawler.morphology.MorphologyCache.analyse``)."""
        self._ru = Stemmer.Stemmer("russian")
        self._analyse = analyse or functools.partial(russian_analysis, stemmer=self._ru)
        self._en = Stemmer.Stemmer("english")
        self._root = _Node()
        self._vocabulary: set[str] = set()
        self._stem_keys: dict[str, set[str]] = {}  # Snowball stem of a text word → "s" keys
        self._prefixes: list[int] = []
        self._glued: dict[str, int] = {}  # token → where its acronym tail starts
        for spec in organisations:
            for alias in spec.aliases:
                languages = spec.languages.get(alias)
                self._add(Entry(spec.id, alias, "alias", spec.is_safe(alias), is_acronym(alias),
                                frozenset(languages) if languages else None))
            for phrase in spec.exclude:
                self._add(Entry(spec.id, phrase, "exclude"))
            for phrase in spec.context:
                self._add(Entry(spec.id, phrase, "context"))
        self._prefixes.sort()
        self._cache = _KeyCache(self._token_keys, CACHE_SIZE)

    # -- compiling -------------------------------------------------------------------------

    def _add(self, entry: Entry) -> None:
        self._insert(entry, self._phrase_keys(entry.phrase, acronym=entry.kind != "exclude"))
        if entry.kind == "context" and not is_acronym(entry.phrase) and not is_turkic(entry.phrase):
            # Context words of Kazakh and Azerbaijani texts without letters of their own
            # ("sammit", "саммит") take endings: match them also with a tolerant ending.
            words = [lower_word(clean_token(token)) for token in TOKEN.findall(entry.phrase)]
            if words and len(words[-1]) >= MIN_PREFIX:
                self._insert(entry, self._prefix_keys(words))

    def _insert(self, entry: Entry, keys: list[str]) -> None:
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
            return self._prefix_keys(lowered)
        return ["s" + self._base_stem(word) for word in lowered]

    def _prefix_keys(self, lowered: list[str]) -> list[str]:
        """Keys of a name matched word for word, its last word with a tolerant ending."""
        last = lowered[-1] if lowered else ""
        if last and len(last) not in self._prefixes:
            self._prefixes.append(len(last))
        return ["w" + word for word in lowered[:-1]] + ["p" + last] if last else []

    def _base_stem(self, word: str) -> str:
        """The stem of an alias word, registered under the stems of all its forms.

        A Russian word's key is the stem of its most likely lemma; every form of every
        lexeme pymorphy3 knows for it maps to that key ("кубка" → "кубок"), so the text
        side needs only a Snowball stem per token.
        """
        if not _CYRILLIC.search(word):
            stem: str = self._en.stemWord(word)  # snowballstemmer ships no types
            self._stem_keys.setdefault(stem, set()).add("s" + stem)
            return stem
        stem, form_stems = self._analyse(word)
        for form_stem in form_stems:
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
        elif word != lower and (glued := _GLUED.fullmatch(word)) and \
                acronym_key(glued.group(2)) in self._vocabulary:
            if len(word) == len(token):
                self._glued[token] = len(glued.group(1))
        for length in self._prefixes:
            if length > len(lower):
                break
            if len(lower) - length <= MAX_ENDING and "p" + lower[:length] in self._vocabulary:
                keys.add("p" + lower[:length])
        return tuple(keys)

    def _walk(self, keys: Sequence[tuple[str, ...]]) -> list[tuple[int, int, list[Entry]]]:
        """Token ranges [i, j) whose keys spell a phrase, with the phrase's entries."""
        found: list[tuple[int, int, list[Entry]]] = []
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

    def find(self, text: str, language: str | None = None, topic: str | None = None) -> list[Match]:
        """Every organisation mention in ``text`` that counts, sorted by start, without overlaps.

        :param language: the item's declared language (``ru``, ``en``, …), checked against the
            text's letters for language-scoped aliases; None: guessed from the text.
        :param topic: the source's topic; ``"foreign-affairs"`` is weak evidence for an
            ambiguous acronym.
        """
        return [match for match in self.explain(text, language, topic)
                if match.confidence >= MIN_COUNTED]

    def explain(self, text: str, language: str | None = None, topic: str | None = None) -> list[Match]:
        """Like :meth:`find`, but also the candidates that do not count (confidence 0, with
        the reason as evidence: no evidence, another language)."""
        pieces = _PIECES.split(text)
        keys = list(map(self._cache.__getitem__, pieces[1::2]))
        if self._glued and not self._glued.keys().isdisjoint(pieces[1::2]):
            pieces = self._unglue(pieces)
            keys = list(map(self._cache.__getitem__, pieces[1::2]))
        found = self._walk(keys)
        if not any(entry.kind == "alias" for _, _, entries in found for entry in entries):
            return []  # only context words or excludes ("саммит", "Азия"): nothing to resolve
        starts = _token_starts(pieces, sorted({i for i, _, _ in found}))
        hits = [Hit(starts[i], starts[i] + sum(map(len, pieces[2 * i + 1:2 * j])), entries)
                for i, j, entries in found if _joined(pieces, i, j)]
        return Resolver(text, language, topic).resolve(hits)

    def _unglue(self, pieces: list[str]) -> list[str]:
        """Split glued tokens ("безопасностиОДКБ") into head and acronym, with an empty gap."""
        result = [pieces[0]]
        for token, gap in zip(pieces[1::2], pieces[2::2], strict=True):
            cut = self._glued.get(token)
            if cut is None:
                result += [token, gap]
            else:
                result += [token[:cut], "", token[cut:], gap]
        return result


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


def organisation_ids(matches: Iterable[Match]) -> list[str]:
    """The sorted, unique organisation ids of some matches."""
    return sorted({match.organisation for match in matches})
