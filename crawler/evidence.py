"""Raw alias hits in one text → matches: vetoes, languages, overlaps, evidence, snippets.

An ambiguous alias (an acronym not marked safe: SCO, CIS, ОДКБ) counts only with evidence,
weighed into a confidence:

====================================================  ==========
evidence                                              confidence
====================================================  ==========
a name, or a safe acronym (no evidence needed)        1.0
another (unambiguous) alias of the organisation        0.95
two or more of its ``context`` phrases nearby          0.9
one ``context`` phrase nearby                          0.8
another tracked organisation named nearby              0.7
the source's ``topic`` is foreign affairs              0.6
nothing                                                0 (not a match)
====================================================  ==========

"Nearby" is within CONTEXT_RADIUS characters. An acronym means one thing within one text, so
every occurrence of an ambiguous alias gets the best confidence of any of its occurrences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from crawler.languages import normalise_language, text_language

_INVISIBLE = "\u00ad\u200b\u200c\u200d\u2060\ufeff"
_SENTENCE_END = re.compile(r"[\u3002\uff01\uff1f]+|[.!?\u2026]+[\"')\]\u00bb\u201d\u2019]*(?=\s|\Z)"
                           r"|\n[ \t\u00a0]*\n")
_SPACES = re.compile(r"\s+")
_DROP_INVISIBLE = str.maketrans("", "", _INVISIBLE)
SNIPPET_RADIUS = 80
CONTEXT_RADIUS = 300  # characters either side of an ambiguous match searched for evidence
MIN_COUNTED = 0.5  # a match with less confidence is not a match (``find`` leaves it out)
FOREIGN_AFFAIRS = "foreign-affairs"
OTHER_ALIAS, TWO_TERMS, ONE_TERM, OTHER_ORG, TOPIC = 0.95, 0.9, 0.8, 0.7, 0.6


@dataclass(frozen=True)
class Match:
    """One mention of an organisation in a text."""

    organisation: str  # organisation id
    alias: str  # the configured alias that matched
    form: str  # the text as found: text[start:end]
    start: int  # offsets into the text given to OrgMatcher.find()
    end: int
    snippet: str  # the sentence around the mention (at most ±80 characters), one line
    confidence: float = 1.0  # 1.0: a name or safe acronym; less: an ambiguous one with evidence
    evidence: tuple[str, ...] = ()  # why it counts (or, with confidence 0, why it does not)

    def explanation(self) -> str:
        """One line, e.g. ``SCO: acronym + context 'Shanghai', 'summit'``."""
        return f"{self.organisation}: " + " + ".join(self.evidence or ("name",))


@dataclass(frozen=True)
class Entry:
    """What a phrase in the trie stands for."""

    organisation: str
    phrase: str
    kind: str = "alias"  # alias | exclude | context
    safe: bool = True  # counts without evidence
    acronym: bool = False
    languages: frozenset[str] | None = None  # only in texts in these languages


@dataclass
class Hit:
    start: int
    end: int
    entries: list[Entry]


@dataclass(frozen=True)
class _Chosen:
    start: int
    end: int
    entry: Entry


class Resolver:
    """Turns the raw hits in one text into matches (and, for ``explain``, rejected candidates)."""

    def __init__(self, text: str, language: str | None = None, topic: str | None = None) -> None:
        self.text = text
        self.declared = normalise_language(language)
        self.topic = topic
        self._language: str | None = None

    @property
    def language(self) -> str:
        if self._language is None:
            self._language = text_language(self.text, self.declared)
        return self._language

    def resolve(self, hits: list[Hit]) -> list[Match]:
        vetoes = [(hit.start, e.organisation, self.text[hit.start:hit.end])
                  for hit in hits for e in hit.entries if e.kind == "exclude"]
        context = [(hit.start, hit.end, e) for hit in hits for e in hit.entries if e.kind == "context"]
        candidates: list[tuple[int, int, dict[str, Entry]]] = []
        rejected: list[Match] = []
        for hit in hits:
            orgs = self._allowed(hit, vetoes, rejected)
            if orgs:
                candidates.append((hit.start, hit.end, orgs))
        chosen = _disambiguate(_leftmost_longest(candidates))
        matches = self._weigh(chosen, context)
        taken = [(m.start, m.end) for m in matches]
        rejected = [r for r in rejected if not any(s < r.end and r.start < e for s, e in taken)]
        return sorted(matches + rejected, key=lambda m: (m.start, -m.end))

    def _allowed(self, hit: Hit, vetoes: list[tuple[int, str, str]],
                 rejected: list[Match]) -> dict[str, Entry]:
        """Organisation → entry for this hit's aliases not vetoed in the same sentence and in
        the text's language."""
        orgs: dict[str, Entry] = {}
        for entry in hit.entries:
            if entry.kind != "alias" or entry.organisation in orgs:
                continue
            veto = next((form for position, org, form in vetoes if org == entry.organisation
                         and self._same_sentence(hit.start, position)), None)
            if veto is not None:
                rejected.append(self._match(_Chosen(hit.start, hit.end, entry), 0.0,
                                            (f"vetoed by exclude {veto!r}",)))
                continue
            if entry.languages is not None and self.language not in entry.languages:
                why = f"{'/'.join(sorted(entry.languages))} only; text is {self.language}"
                rejected.append(self._match(_Chosen(hit.start, hit.end, entry), 0.0, (why,)))
                continue
            orgs[entry.organisation] = entry
        return orgs

    def _weigh(self, chosen: list[_Chosen], context: list[tuple[int, int, Entry]]) -> list[Match]:
        sure = [c for c in chosen if c.entry.safe]
        weighed: list[tuple[_Chosen, float, tuple[str, ...]]] = []
        for c in chosen:
            if c.entry.safe:
                weighed.append((c, 1.0, ("acronym" if c.entry.acronym else "name",)))
            else:
                weighed.append((c, *self._evidence(c, sure, context)))
        best: dict[tuple[str, str], tuple[float, tuple[str, ...]]] = {}
        for c, confidence, evidence in weighed:
            key = (c.entry.organisation, c.entry.phrase)
            if confidence > best.get(key, (-1.0, ()))[0]:
                best[key] = (confidence, evidence)
        return [self._match(c, *best[(c.entry.organisation, c.entry.phrase)]) for c, _, _ in weighed]

    def _evidence(self, c: _Chosen, sure: list[_Chosen],
                  context: list[tuple[int, int, Entry]]) -> tuple[float, tuple[str, ...]]:
        org = c.entry.organisation
        low, high = c.start - CONTEXT_RADIUS, c.end + CONTEXT_RADIUS
        confidence, evidence = 0.0, ["acronym"]
        names = list(dict.fromkeys(s.entry.phrase for s in sure if s.entry.organisation == org))
        if names:
            confidence = OTHER_ALIAS
            evidence.append("also named " + ", ".join(map(repr, names[:2])))
        terms = list(dict.fromkeys(self.text[start:end] for start, end, e in context
                                   if e.organisation == org and low <= start and end <= high
                                   and not any(s.start < end and start < s.end for s in (c, *sure))))
        if terms:
            confidence = max(confidence, TWO_TERMS if len(terms) >= 2 else ONE_TERM)
            evidence.append("context " + ", ".join(map(repr, terms[:4])))
        near = sorted({s.entry.organisation for s in sure
                       if s.entry.organisation != org and low <= s.start and s.end <= high})
        if near:
            confidence = max(confidence, OTHER_ORG)
            evidence.append("near " + ", ".join(near))
        if self.topic == FOREIGN_AFFAIRS:
            confidence = max(confidence, TOPIC)
            evidence.append("foreign-affairs source")
        if confidence == 0.0:
            evidence.append("no evidence (ambiguous)")
        return confidence, tuple(evidence)

    def _same_sentence(self, a: int, b: int) -> bool:
        """Whether no sentence ends between two positions."""
        low, high = min(a, b), max(a, b)
        return _SENTENCE_END.search(self.text, low, high) is None

    def _match(self, c: _Chosen, confidence: float, evidence: tuple[str, ...]) -> Match:
        return Match(c.entry.organisation, c.entry.phrase, self.text[c.start:c.end], c.start, c.end,
                     self._snippet(c.start, c.end), confidence, evidence)

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
    candidates: list[tuple[int, int, dict[str, Entry]]],
) -> list[tuple[int, int, dict[str, Entry]]]:
    """Keep the longest hit at the leftmost start, then the next hit after it, and so on."""
    chosen: list[tuple[int, int, dict[str, Entry]]] = []
    for start, end, orgs in sorted(candidates, key=lambda c: (c[0], -c[1])):
        if chosen and start < chosen[-1][1]:
            continue
        chosen.append((start, end, orgs))
    return chosen


def _disambiguate(chosen: list[tuple[int, int, dict[str, Entry]]]) -> list[_Chosen]:
    """Give an alias shared by several organisations (Azerbaijani İƏT: OIC and ECO) to the
    one named unambiguously just before it (as a name is spelled out, then abbreviated), else
    just after it; drop it when the text names none of them."""
    sure = [(start, end, next(iter(orgs))) for start, end, orgs in chosen if len(orgs) == 1]
    result: list[_Chosen] = []
    for start, end, orgs in chosen:
        org = next(iter(orgs)) if len(orgs) == 1 else _nearest(sure, start, end, orgs)
        if org is not None:
            entry = orgs[org]
            # a shared alias given to one organisation by its name nearby needs no more evidence
            result.append(_Chosen(start, end, entry if len(orgs) == 1 else replace(entry, safe=True)))
    return result


def _nearest(sure: list[tuple[int, int, str]], start: int, end: int,
             orgs: dict[str, Entry]) -> str | None:
    before = [(start - s_end, org) for _, s_end, org in sure if org in orgs and s_end <= start]
    after = [(s_start - end, org) for s_start, _, org in sure if org in orgs and s_start >= end]
    best = min(before or after, default=None)
    return best[1] if best else None
