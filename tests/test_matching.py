"""Organisation matching: a labelled sentence table, offsets, snippets, vetoes and specs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest
from pydantic import ValidationError

from crawler.matching import Match, OrgMatcher, organisation_ids
from crawler.organisations import OrganisationSpec, builtin_organisations, load_organisations

SENTENCES = Path(__file__).parent / "data" / "matching" / "sentences.txt"
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\n")


class Case(NamedTuple):
    text: str
    expected: frozenset[str]
    known_gap: bool
    line: int


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) else "\n", text)


def load_cases(path: Path = SENTENCES) -> list[Case]:
    """Read ``IDS | text`` lines; ``-`` means no organisation, ``~`` marks a known gap."""
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        labels, text = line.split(" | ", 1)
        gap = labels.startswith("~")
        ids = frozenset(labels.lstrip("~").split()) - {"-"}
        cases.append(Case(_unescape(text), ids, gap, number))
    return cases


CASES = load_cases()


@pytest.fixture(scope="module")
def matcher() -> OrgMatcher:
    return OrgMatcher(builtin_organisations())


def _case_id(case: Case) -> str:
    return f"L{case.line}"


def test_table_is_big_and_varied() -> None:
    assert len(CASES) >= 150
    assert sum(1 for case in CASES if not case.expected) >= 40
    assert sum(1 for case in CASES if len(case.expected) >= 2) >= 10


def _param(case: Case) -> object:
    """A known gap (a ``~`` line) must fail: when the matcher closes it, the XPASS fails the
    suite, so that the table loses its ``~``."""
    marks = [pytest.mark.xfail(strict=True, reason="known gap of the matcher")] if case.known_gap else []
    return pytest.param(case, id=_case_id(case), marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_sentence_table(matcher: OrgMatcher, case: Case) -> None:
    found = set(organisation_ids(matcher.find(case.text)))
    assert found == case.expected, case.text


def precision_recall(matcher: OrgMatcher, cases: list[Case]) -> tuple[float, float, int, int, int]:
    """Micro-averaged precision and recall of organisation ids per sentence."""
    true_pos = false_pos = false_neg = 0
    for case in cases:
        found = set(organisation_ids(matcher.find(case.text)))
        true_pos += len(found & case.expected)
        false_pos += len(found - case.expected)
        false_neg += len(case.expected - found)
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 1.0
    recall = true_pos / (true_pos + false_neg) if true_pos + false_neg else 1.0
    return precision, recall, true_pos, false_pos, false_neg


def test_precision_and_recall(matcher: OrgMatcher, capsys: pytest.CaptureFixture[str]) -> None:
    precision, recall, tp, fp, fn = precision_recall(matcher, CASES)
    with capsys.disabled():
        print(f"\nmatching table: {len(CASES)} sentences, precision {precision:.3f}, "
              f"recall {recall:.3f} (tp {tp}, fp {fp}, fn {fn})")
    assert precision >= 0.98
    assert recall >= 0.98


# -- offsets, form, alias, snippet -------------------------------------------------------------


def test_match_records_offsets_form_and_alias(matcher: OrgMatcher) -> None:
    text = "Вчера в Баку завершилась сессия Совещания по взаимодействию и мерам доверия в Азии."
    [match] = matcher.find(text)
    assert match.organisation == "CICA"
    assert match.alias == "Совещание по взаимодействию и мерам доверия в Азии"
    assert match.form == "Совещания по взаимодействию и мерам доверия в Азии"
    assert text[match.start:match.end] == match.form
    assert match.snippet == text


def test_offsets_point_into_the_original_text(matcher: OrgMatcher) -> None:
    text = "«Сове\u00adщание по\u00a0взаимодействию\nи мерам доверия в Азии» и «СВМДА-2026»"
    first, second = matcher.find(text)
    assert first.form == "Сове\u00adщание по\u00a0взаимодействию\nи мерам доверия в Азии"
    assert text[first.start:first.end] == first.form
    assert (second.form, second.alias) == ("СВМДА", "СВМДА")
    assert text[second.start:second.end] == "СВМДА"
    assert "\u00ad" not in first.snippet and "\n" not in first.snippet


def test_matches_are_sorted_and_do_not_overlap(matcher: OrgMatcher) -> None:
    text = "ОДКБ, ШОС и Совещание по взаимодействию и мерам доверия в Азии (СВМДА) и снова ОДКБ."
    matches = matcher.find(text)
    assert [m.organisation for m in matches] == ["CSTO", "SCO", "CICA", "CICA", "CSTO"]
    assert all(a.end <= b.start for a, b in zip(matches, matches[1:], strict=False))


def test_longest_name_wins_over_a_shorter_one_inside_it(matcher: OrgMatcher) -> None:
    text = "Доклад Организации экономического сотрудничества и развития вышел."
    assert [m.organisation for m in matcher.find(text)] == ["OECD"]


def test_snippet_is_the_sentence_clipped_to_80_characters(matcher: OrgMatcher) -> None:
    before = "Первое предложение. " + "слово " * 40
    text = before + "ШОС " + "ещё " * 40 + "конец. Другое предложение."
    [match] = matcher.find(text)
    assert match.snippet.startswith("…") and match.snippet.endswith("…")
    assert "ШОС" in match.snippet and "Первое" not in match.snippet
    assert len(match.snippet) <= 2 * 80 + len("ШОС") + 2


def test_snippet_collapses_whitespace(matcher: OrgMatcher) -> None:
    [match] = matcher.find("Саммит\n\tБРИКС   открылся\u00a0сегодня")
    assert match.snippet == "Саммит БРИКС открылся сегодня"


def test_acronym_suffix_forms_keep_only_the_acronym(matcher: OrgMatcher) -> None:
    for text, form in [("AQEM-in", "AQEM"), ("АӨСШК-ның", "АӨСШК"), ("CICA's", "CICA"),
                       ("СВМДА-2026", "СВМДА"), ("(ШОС)", "ШОС"), ("«ОДКБ»", "ОДКБ")]:
        assert [m.form for m in matcher.explain(text)] == [form]


def test_acronyms_need_capitals_and_whole_words(matcher: OrgMatcher) -> None:
    for text in ["cica", "Cica", "CICADA", "SCOTLAND", "CISCO", "BRICSmart", "ОЭСРовский",
                 "un", "Un", "eco", "Eco", "шос", "Сшос", "СВМДАх"]:
        assert [m for m in matcher.find(text) if m.alias.isupper()] == [], text


def test_agglutinated_last_word(matcher: OrgMatcher) -> None:
    [match] = matcher.find("Türk Dövlətləri Təşkilatından gələn nümayəndə")
    assert match.form == "Türk Dövlətləri Təşkilatından"
    assert matcher.find("Türk Dövlətləri Təşkilatçılığı haqqında") == []  # ending too long


def test_organisation_ids_are_sorted_and_unique() -> None:
    matches = [Match("SCO", "ШОС", "ШОС", 0, 3, ""), Match("CICA", "CICA", "CICA", 5, 9, ""),
               Match("SCO", "ШОС", "ШОС", 10, 13, "")]
    assert organisation_ids(matches) == ["CICA", "SCO"]


def test_empty_and_matchless_texts(matcher: OrgMatcher) -> None:
    assert matcher.find("") == []
    assert matcher.find("   \n") == []
    assert OrgMatcher([]).find("СВМДА") == []


def test_a_full_token_cache_is_emptied_and_refilled(monkeypatch: pytest.MonkeyPatch) -> None:
    import crawler.matching

    monkeypatch.setattr(crawler.matching, "CACHE_SIZE", 3)
    small = OrgMatcher(builtin_organisations())
    cases = [case for case in CASES if not case.known_gap][:40]
    first = [small.find(case.text) for case in cases]
    assert [small.find(case.text) for case in cases] == first
    assert [organisation_ids(m) for m in first] == [sorted(case.expected) for case in cases]


# -- exclude ------------------------------------------------------------------------------------


def _spec(**fields: object) -> OrganisationSpec:
    return OrganisationSpec.model_validate({"id": "CICA", "aliases": ["CICA"], "safe": ["CICA"], **fields})


def test_exclude_vetoes_the_same_sentence_only() -> None:
    matcher = OrgMatcher([_spec(exclude=["cica cream", "centella"])])
    assert matcher.find("New CICA cream soothes skin") == []
    assert matcher.find("CICA balm with Centella asiatica.") == []
    assert len(matcher.find("CICA met in Baku. Centella grows in Asia.")) == 1


def test_exclude_matches_any_case_form() -> None:
    matcher = OrgMatcher([OrganisationSpec(id="ECO", aliases=("ОЭС",), exclude=("энергосистема",),
                                           safe=("ОЭС",))])
    assert matcher.find("ОЭС Сибири: в энергосистеме дефицит.") == []
    assert len(matcher.find("Саммит ОЭС открылся в Ханкенди.")) == 1


def test_exclude_vetoes_only_its_own_organisation() -> None:
    matcher = OrgMatcher([_spec(exclude=["cream"]),
                          OrganisationSpec(id="SCO", aliases=("SCO",), safe=("SCO",))])
    assert organisation_ids(matcher.find("CICA and SCO cream")) == ["SCO"]


def test_ambiguous_alias_goes_to_the_nearest_full_name(matcher: OrgMatcher) -> None:
    text = ("İslam Əməkdaşlıq Təşkilatı Bakıda toplandı. Sonra İƏT-in katibi danışdı. "
            "Ayrıca İqtisadi Əməkdaşlıq Təşkilatı (İƏT) Xankəndidə idi.")
    matches = [(m.form, m.organisation) for m in matcher.find(text)]
    assert matches == [("İslam Əməkdaşlıq Təşkilatı", "OIC"), ("İƏT", "OIC"),
                       ("İqtisadi Əməkdaşlıq Təşkilatı", "ECO"), ("İƏT", "ECO")]


def test_ambiguous_alias_alone_is_left_unmatched(matcher: OrgMatcher) -> None:
    assert matcher.find("Azərbaycan İƏT-in sammitinə ev sahibliyi edəcək.") == []


# -- custom specs -------------------------------------------------------------------------------


def test_a_custom_russian_name_matches_in_every_case() -> None:
    matcher = OrgMatcher([OrganisationSpec(id="ADB", aliases=("Азиатский банк развития",))])
    for form in ["Азиатский банк развития", "Азиатского банка развития", "Азиатскому банку развития",
                 "Азиатским банком развития", "Азиатском банке развития", "АЗИАТСКИЙ БАНК РАЗВИТИЯ"]:
        assert [m.form for m in matcher.find(f"Новости: {form} выдал кредит")] == [form]


def test_fleeting_vowels_match_through_lemmas() -> None:
    matcher = OrgMatcher([OrganisationSpec(id="CUP", aliases=("Кубок Каспия",))])
    assert [m.form for m in matcher.find("Финал Кубка Каспия прошёл в Баку")] == ["Кубка Каспия"]


def test_look_alike_letters_inside_words() -> None:
    matcher = OrgMatcher([OrganisationSpec(id="SCO", aliases=("Шанхайская организация сотрудничества",))])
    # Latin "a", "o", "c" inside Cyrillic words
    assert len(matcher.find("Шaнхaйскoй oргaнизaции сoтрудничествa")) == 1


# -- specs --------------------------------------------------------------------------------------


def test_spec_accepts_lists_and_strips_aliases() -> None:
    spec = OrganisationSpec.model_validate(
        {"id": "CICA_2", "aliases": [" CICA ", "СВМДА", "CICA"], "exclude": ["cica  cream"]})
    assert spec.aliases == ("CICA", "СВМДА")
    assert spec.exclude == ("cica cream",)
    assert spec.label == "CICA_2"


@pytest.mark.parametrize("fields", [
    {"id": "ci ca", "aliases": ["CICA"]},
    {"id": "", "aliases": ["CICA"]},
    {"id": "CICA", "aliases": []},
    {"id": "CICA"},
    {"id": "CICA", "aliases": ["  "]},
    {"id": "CICA", "aliases": ["CICA"], "exclude": [""]},
    {"id": "CICA", "aliases": ["CICA"], "colour": "blue"},
    {"id": "CICA", "aliases": [1]},
])
def test_spec_rejects_bad_fields(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        OrganisationSpec.model_validate(fields)


def test_spec_is_frozen() -> None:
    spec = _spec()
    with pytest.raises(ValidationError):
        spec.id = "X"  # type: ignore[misc]


def test_duplicate_ids_are_refused() -> None:
    table = {"id": "CICA", "aliases": ["CICA"]}
    with pytest.raises(ValueError, match="twice"):
        load_organisations({"organisations": [table, table]})


def test_builtin_catalogue() -> None:
    specs = builtin_organisations()
    ids = [spec.id for spec in specs]
    for required in ["CICA", "SCO", "CSTO", "CIS", "EAEU", "BRICS", "OTS", "OSCE", "ASEAN",
                     "ECO", "OIC", "UN"]:
        assert required in ids
    cica = specs[ids.index("CICA")]
    assert {"CICA", "СВМДА", "AQEM", "АӨСШК"} <= set(cica.aliases)
    assert "centella" in cica.exclude
    ots = specs[ids.index("OTS")]
    assert ots.languages["ОТГ"] == ("ru",) and not ots.is_safe("ОТГ")
    assert cica.is_safe("СВМДА") and not cica.is_safe("CICA") and cica.context


# -- ambiguous acronyms, evidence, languages, boundaries ------------------------------------------


def test_an_ambiguous_acronym_needs_evidence(matcher: OrgMatcher) -> None:
    assert matcher.find("The SCO filing said that IBM entered into its Unix license agreements.") == []
    [match] = matcher.find("SCO foreign ministers met in Tashkent.")
    assert match.confidence == 0.9 and match.explanation() == \
        "SCO: acronym + context 'foreign ministers', 'Tashkent'"
    named = matcher.find("Шанхайская организация сотрудничества (ШОС) и SCO.")
    assert [m.confidence for m in named] == [1.0, 1.0, 0.95]


def test_evidence_kinds_and_confidence(matcher: OrgMatcher) -> None:
    assert matcher.find("ОДКБ и ООН.")[0].evidence == ("acronym", "near UN")
    [topic] = matcher.find("Заявление по ОДКБ.", topic="foreign-affairs")
    assert (topic.confidence, topic.evidence[-1]) == (0.6, "foreign-affairs source")
    assert matcher.find("Заявление по ОДКБ.") == []
    # one acronym, one meaning: the occurrence without context inherits the best evidence
    text = "CICA summit opens. " + "Filler words here. " * 30 + "CICA again."
    assert [m.confidence for m in matcher.find(text)] == [0.8, 0.8]


def test_explain_shows_what_does_not_count(matcher: OrgMatcher) -> None:
    reasons = [m.evidence[-1] for m in matcher.explain("The SCO Group sued IBM. Заявление ОДКБ.")]
    assert reasons == ["vetoed by exclude 'SCO Group'", "no evidence (ambiguous)"]
    assert all(m.confidence == 0.0 for m in matcher.explain("The SCO Group sued IBM."))


def test_language_scoped_aliases(matcher: OrgMatcher) -> None:
    assert matcher.find("Голова ОТГ повідомив про ремонт доріг, саммит.", "ru") == []  # Ukrainian letters
    assert organisation_ids(matcher.find("Саммит ОТГ прошёл в Габале.", "ru")) == ["OTS"]
    assert matcher.find("MDB financing rose at the summit in Baku.", "en") == []
    assert organisation_ids(matcher.find("MDB-nin iclası Düşənbədə oldu.", "az")) == ["CIS"]
    assert organisation_ids(matcher.find("ТМД елдерінің басшылары кездесті.")) == ["CIS"]  # guessed kk


def test_acronyms_glued_to_cjk_or_a_lower_case_word(matcher: OrgMatcher) -> None:
    assert [m.form for m in matcher.find("日本によってEAEU条約が批准された")] == ["EAEU"]
    text = "Организации Договора о коллективной безопасностиОДКБ"
    assert [m.form for m in matcher.find(text)] == [
        "Организации Договора о коллективной безопасности", "ОДКБ"]
    assert matcher.find("iCISCO CamelCase СНГовский") == []


def test_a_configured_builtin_id_inherits_safe_and_context() -> None:
    [spec] = load_organisations({"organisations": [{"id": "SCO", "aliases": ["SCO", "ШОС"]}]})
    assert spec.safe == ("ШОС",) and "Shanghai" in spec.context
    [own] = load_organisations({"organisations": [{"id": "SCO", "aliases": ["SCO"], "safe": ["SCO"]}]})
    assert own.context == ()


def test_spec_refuses_safe_or_languages_of_unknown_aliases() -> None:
    with pytest.raises(ValidationError):
        _spec(safe=["NATO"])
    with pytest.raises(ValidationError):
        _spec(languages={"CICA": ["russian"]})
