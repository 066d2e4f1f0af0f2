"""The matcher on real text: a labelled development set of sentences from public web pages.

``tests/data/matching/real_sentences.jsonl``: one object per line — ``text`` (a sentence as
found on the page), ``orgs`` (the organisations it truly mentions), ``lang`` and ``url`` (where
it was found; ``note`` when the stored excerpt had no address). Most traps are acronyms that
mean something else there: the SCO Group and the Scottish Chamber Orchestra, CIS Benchmarks
and the UK Construction Industry Scheme, the Canadian CICA, Russian children's hospitals
(ОДКБ), Ukrainian municipalities (ОТГ), the US Office of Thrift Supervision (OTS),
multilateral development banks (MDB), a car's ECO button.

Scored twice: per sentence (each one alone, without the rest of its page), and per page (the
sentences of one address joined, as the excerpt of one item — how the matcher meets text).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from crawler.matching import OrgMatcher, organisation_ids
from crawler.organisations import builtin_organisations

REAL = Path(__file__).parent / "data" / "matching" / "real_sentences.jsonl"
Row = dict[str, object]


def load_rows(path: Path = REAL) -> list[Row]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


ROWS = load_rows()


@pytest.fixture(scope="module")
def matcher() -> OrgMatcher:
    return OrgMatcher(builtin_organisations())


def pages(rows: list[Row]) -> list[Row]:
    """The sentences of each address joined into one text (rows without an address stay alone)."""
    grouped: dict[str, list[Row]] = defaultdict(list)
    for number, row in enumerate(rows):
        grouped[str(row["url"]) or f"#{number}"].append(row)
    return [{"text": " ".join(str(r["text"]) for r in group), "lang": group[0]["lang"],
             "orgs": sorted({o for r in group for o in r["orgs"]}), "url": url}  # type: ignore[attr-defined]
            for url, group in grouped.items()]


def scores(matcher: OrgMatcher, rows: list[Row]) -> dict[str, tuple[int, int, int]]:
    """Language → (true positives, false positives, false negatives) of organisation ids."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        found = set(organisation_ids(matcher.find(str(row["text"]), str(row["lang"]))))
        expected = set(row["orgs"])  # type: ignore[call-overload]
        for language in (str(row["lang"]), "all"):
            counts[language][0] += len(found & expected)
            counts[language][1] += len(found - expected)
            counts[language][2] += len(expected - found)
    return {language: (tp, fp, fn) for language, (tp, fp, fn) in counts.items()}


def precision_recall(tp: int, fp: int, fn: int) -> tuple[float, float]:
    return (tp / (tp + fp) if tp + fp else 1.0), (tp / (tp + fn) if tp + fn else 1.0)


def _report(title: str, table: dict[str, tuple[int, int, int]]) -> str:
    lines = [title]
    for language in sorted(table, key=lambda key: (key == "all", key)):
        tp, fp, fn = table[language]
        precision, recall = precision_recall(tp, fp, fn)
        lines.append(f"  {language:>3}: precision {precision:.3f}, recall {recall:.3f} "
                     f"(tp {tp}, fp {fp}, fn {fn})")
    return "\n".join(lines)


def test_the_set_is_real_big_and_has_traps() -> None:
    assert len(ROWS) >= 200
    assert all(str(row["url"]).startswith("http") or row.get("note") for row in ROWS)
    assert sum(1 for row in ROWS if not row["orgs"]) >= 80  # sentences where an acronym means something else
    assert {"ru", "en", "az", "kk"} <= {str(row["lang"]) for row in ROWS}


def test_precision_and_recall_on_real_text(matcher: OrgMatcher, capsys: pytest.CaptureFixture[str]) -> None:
    by_sentence, by_page = scores(matcher, ROWS), scores(matcher, pages(ROWS))
    with capsys.disabled():
        print("\n" + _report(f"real sentences ({len(ROWS)}), each alone:", by_sentence))
        print(_report(f"real pages ({len(pages(ROWS))}), sentences of one address together:", by_page))
    for table in (by_sentence, by_page):
        for language, counts in table.items():
            precision, _ = precision_recall(*counts)
            assert precision >= 0.95, (language, counts)
    precision, recall = precision_recall(*by_page["all"])
    assert precision >= 0.95 and recall >= 0.97
    assert precision_recall(*by_sentence["all"])[1] >= 0.93  # alone, some acronyms lack their context


@pytest.mark.parametrize("row", [r for r in ROWS if not r["orgs"]], ids=lambda r: str(r["text"])[:40])
def test_acronyms_that_mean_something_else_are_not_matches(matcher: OrgMatcher, row: Row) -> None:
    assert organisation_ids(matcher.find(str(row["text"]), str(row["lang"]))) == []
