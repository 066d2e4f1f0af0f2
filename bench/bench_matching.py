"""Benchmark OrgMatcher against a plain pyahocorasick scan over the same texts."""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import resource
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import ahocorasick
import pymorphy3

from crawler.matching import OrgMatcher, _morph
from crawler.organisations import OrganisationSpec

RU_ADJECTIVES = (
    "балтийский каспийский евразийский азиатский северный южный восточный западный "
    "центральный международный региональный национальный экономический торговый "
    "инвестиционный энергетический транспортный промышленный научный культурный "
    "гуманитарный технический финансовый таможенный морской горный речной пограничный "
    "аграрный цифровой исламский тюркский арабский африканский европейский тихоокеанский "
    "арктический средиземноморский черноморский дунайский сибирский уральский "
    "молодёжный женский деловой медицинский образовательный спортивный"
).split()
RU_NOUNS = (
    "совет союз банк фонд форум комитет центр институт агентство сообщество содружество "
    "организация ассоциация конференция комиссия палата партнёрство инициатива группа "
    "платформа лига альянс собрание совещание диалог клуб сеть объединение бюро служба"
).split()
RU_GENITIVES = (
    "сотрудничества развития безопасности интеграции торговли инвестиций партнёрства "
    "государств народов регионов стран министров парламентов городов университетов "
    "предпринимателей экспортёров инженеров журналистов учёных"
).split()
EN_WORDS = (
    "the of and to in a is that for on was with as by at from it be this are have an were "
    "has had not but or which their they been more its about also new would after people "
    "first two who other time years said will one year government minister foreign talks "
    "meeting summit cooperation security trade president state countries regional economic "
    "development agreement relations bilateral visit delegation statement support energy "
    "investment forum council strategic partnership issues discussed parties signed week "
    "ministry official sides border transport region global international peace stability"
).split()
EN_NAME_WORDS = (
    "Baltic Caspian Eurasian Asian Northern Southern Eastern Western Central Regional "
    "Economic Trade Investment Energy Transport Industrial Scientific Cultural Maritime "
    "Arctic Danube Silk Digital Green Youth Women Business Medical Academic Steppe Altai"
).split()
EN_HEADS = "Council Union Bank Fund Forum Committee Centre Institute Agency Alliance League".split()
CASES = ("nomn", "gent", "datv", "accs", "ablt", "loct")
LATIN_CAPS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CYRILLIC_CAPS = "АБВГДЕЖЗИКЛМНОПРСТУФХЦЧШЭЮЯ"


@dataclass
class Name:
    organisation: str
    alias: str
    forms: list[str]  # surface forms a text may use (all cases of a Russian name)
    acronym: bool


def inflect_russian(morph: pymorphy3.MorphAnalyzer, adjective: str, noun: str, tail: str,
                    case: str) -> str | None:
    """'<adjective> <noun> <genitive tail>' in a case, the adjective agreeing with the noun."""
    noun_parse = morph.parse(noun)[0]
    noun_form = noun_parse.inflect({case, "sing"})
    gender = noun_parse.tag.gender
    adjective_form = morph.parse(adjective)[0].inflect({case, "sing", gender} if gender else {case})
    if noun_form is None or adjective_form is None:
        return None
    return f"{adjective_form.word} {noun_form.word} {tail}"


def russian_names(rng: random.Random, count: int) -> Iterator[tuple[str, list[str]]]:
    morph = _morph()
    combos = list(itertools.product(RU_ADJECTIVES, RU_NOUNS, RU_GENITIVES))
    rng.shuffle(combos)
    for adjective, noun, tail in combos[:count]:
        forms = [inflect_russian(morph, adjective, noun, tail, case) for case in CASES]
        if all(forms):
            yield forms[0].capitalize(), [f.capitalize() for f in forms if f]  # type: ignore[union-attr]


def english_names(rng: random.Random, count: int) -> Iterator[str]:
    combos = list(itertools.product(EN_NAME_WORDS, EN_NAME_WORDS, EN_HEADS))
    rng.shuffle(combos)
    for first, second, head in combos[:count]:
        if first != second:
            yield f"{first} {second} {head}"


def acronyms(rng: random.Random, count: int) -> Iterator[str]:
    seen: set[str] = set()
    while len(seen) < count:
        letters = LATIN_CAPS if rng.random() < 0.5 else CYRILLIC_CAPS
        word = "".join(rng.choice(letters) for _ in range(rng.randint(3, 5)))
        if word not in seen:
            seen.add(word)
            yield word


def make_names(rng: random.Random, total: int) -> list[Name]:
    """Half multi-word Russian names, a fifth English names, the rest acronyms."""
    names = [Name(f"ru{i}", base, forms, False)
             for i, (base, forms) in enumerate(russian_names(rng, total // 2))]
    names += [Name(f"en{i}", alias, [alias], False)
              for i, alias in enumerate(english_names(rng, total // 5))]
    names += [Name(f"ac{i}", alias, [alias], True)
              for i, alias in enumerate(acronyms(rng, total - len(names)))]
    return names


def russian_vocabulary(size: int) -> list[str]:
    """Real Russian word forms, spread over the pymorphy3 dictionary."""
    words = _morph().dictionary.words.iterkeys()
    forms = sorted({w for w in itertools.islice(words, 0, 3_000_000, 97) if w.isalpha()})
    random.Random(1).shuffle(forms)
    return forms[:size]


def make_texts(rng: random.Random, names: list[Name], count: int, vocabulary: list[str]) -> list[str]:
    """News-sized texts (3-5 KB): Zipf-distributed words, sentences, some mentions."""
    ranks = range(1, len(vocabulary) + 1)
    ru_weights = list(itertools.accumulate(1 / r for r in ranks))
    texts = []
    for _ in range(count):
        size = rng.randint(3000, 5000)
        parts: list[str] = []
        length = 0
        while length < size:
            sentence = _sentence(rng, vocabulary, ru_weights, names)
            parts.append(sentence)
            length += len(sentence.encode("utf-8")) + 1
        texts.append(" ".join(parts))
    return texts


def _sentence(rng: random.Random, vocabulary: list[str], weights: list[float],
              names: list[Name]) -> str:
    if rng.random() < 0.25:
        words = rng.choices(EN_WORDS, k=rng.randint(8, 18))
    else:
        words = rng.choices(vocabulary, cum_weights=weights, k=rng.randint(8, 18))
    if rng.random() < 0.08:
        name = rng.choice(names)
        words.insert(rng.randrange(len(words)), rng.choice(name.forms))
    return " ".join(words).capitalize() + "."


def timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1e6


def baseline_automaton(names: list[Name]) -> ahocorasick.Automaton:
    automaton = ahocorasick.Automaton()
    for name in names:
        for form in name.forms:
            key = form if name.acronym else form.lower()
            automaton.add_word(key, (len(key), name.organisation, name.acronym, form))
    automaton.make_automaton()
    return automaton


def baseline_scan(automaton: ahocorasick.Automaton, text: str) -> list[tuple[str, int]]:
    """Plain multi-pattern scan of the lower-cased text with a word-boundary check."""
    lower = text.lower()
    found = []
    for end, (length, organisation, acronym, form) in automaton.iter(lower):
        start = end - length + 1
        if start > 0 and lower[start - 1].isalnum():
            continue
        if end + 1 < len(lower) and lower[end + 1].isalnum():
            continue
        if acronym and text[start:end + 1] != form:
            continue
        found.append((organisation, start))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 aliases, 1,000 texts")
    parser.add_argument("--aliases", type=int, default=None)
    parser.add_argument("--texts", type=int, default=None)
    args = parser.parse_args()
    alias_count = args.aliases or (200 if args.quick else 1000)
    text_count = args.texts or (1000 if args.quick else 10_000)

    rng = random.Random(20260101)
    morph_load, _ = timed(_morph)
    names = make_names(rng, alias_count)
    texts = make_texts(rng, names, text_count, russian_vocabulary(40_000))
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    specs = [OrganisationSpec(id=n.organisation, aliases=(n.alias,)) for n in names]

    gc.collect()
    tracemalloc.start()
    compile_time, matcher = timed(lambda: OrgMatcher(specs))
    compile_memory = tracemalloc.get_traced_memory()[0] / 1e6
    tracemalloc.stop()
    assert isinstance(matcher, OrgMatcher)

    rss_before = rss_mb()
    cold, cold_found = timed(lambda: [matcher.find(t) for t in texts])
    rss_delta = rss_mb() - rss_before
    warm, _ = timed(lambda: [matcher.find(t) for t in texts])
    base_compile, automaton = timed(lambda: baseline_automaton(names))
    assert isinstance(automaton, ahocorasick.Automaton)
    base, base_found = timed(lambda: [baseline_scan(automaton, t) for t in texts])
    ours = sum(len(m) for m in cold_found)  # type: ignore[attr-defined]
    theirs = sum(len(m) for m in base_found)  # type: ignore[attr-defined]

    print(f"{len(names)} aliases ({sum(not n.acronym for n in names)} names, "
          f"{sum(n.acronym for n in names)} acronyms), {len(texts)} texts, {megabytes:.1f} MB\n")
    print("| measure | OrgMatcher | pyahocorasick baseline |")
    print("|---|---|---|")
    print(f"| compile | {compile_time * 1000:.0f} ms (+ {morph_load * 1000:.0f} ms to load "
          f"pymorphy3 once) | {base_compile * 1000:.0f} ms |")
    print(f"| memory | {compile_memory:.1f} MB compiled (tracemalloc); "
          f"+{rss_delta:.0f} MB RSS after the first pass (token cache) | — |")
    print(f"| scan, first pass (cold cache) | {cold:.2f} s, {megabytes / cold:.1f} MB/s | "
          f"{base:.2f} s, {megabytes / base:.1f} MB/s |")
    print(f"| scan, second pass (warm cache) | {warm:.2f} s, {megabytes / warm:.1f} MB/s | — |")
    print(f"| time ratio to baseline | {cold / base:.2f}× cold, {warm / base:.2f}× warm | 1× |")
    print(f"| mentions found | {ours} | {theirs} (given every inflected form) |")


if __name__ == "__main__":
    main()
