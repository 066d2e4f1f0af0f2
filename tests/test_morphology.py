"""The alias words' morphology kept between crawl processes (crawler.morphology): a matcher
compiled from the cache is the matcher pymorphy3 compiles, a crawl process with a warm cache
never imports pymorphy3, and a missing, stale, corrupt or unwritable cache only means
analysing again."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path

import pytest

from crawler import morphology
from crawler.job import CrawlJob
from crawler.matching import OrgMatcher, _morph
from crawler.morphology import FILE_NAME, MorphologyCache
from crawler.organisations import OrganisationSpec, builtin_organisations
from scheduler.config import build_config, default_cache_dir
from scheduler.runner import build_job
from tests.test_matching_real import ROWS

ROOT = Path(__file__).resolve().parents[1]
CICA = OrganisationSpec(id="CICA", name="CICA",
                        aliases=("СВМДА", "Совещание по взаимодействию и мерам доверия в Азии"))
INFLECTED = "Делегация прибыла на заседание Совещания по взаимодействию и мерам доверия в Азии."

# A crawl process compiling the round's matcher (RoundContext.matcher), then telling what it
# imported and found.
ROUND_MATCHER = """
import json, sys
from crawler.job import CrawlJob
from crawler.polls import RoundContext
job = CrawlJob.model_validate_json(sys.stdin.read())
matcher = RoundContext(job=job, sessions=None, ledger=None).matcher
print(json.dumps({"pymorphy3": "pymorphy3" in sys.modules,
                  "found": [m.form for m in matcher.find(sys.argv[1])]}))
"""


def _round_matcher(cache_dir: Path | None) -> dict[str, object]:
    job = CrawlJob(database_url="sqlite://", sources=(), organisations=(CICA,),
                   cache_dir=str(cache_dir) if cache_dir else None)
    done = subprocess.run([sys.executable, "-c", ROUND_MATCHER, INFLECTED], input=job.model_dump_json(),
                          capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _inflected(alias: str, case: str) -> str:
    """The alias with every Russian word put in ``case`` where pymorphy3 can."""
    words = []
    for word in alias.split():
        form = _morph().parse(word)[0].inflect({case})
        words.append(form.word if form is not None and word.islower() else word)
    return " ".join(words)


def _texts() -> list[str]:
    """Real sentences, and every alias of the shipped catalogue as written and in three cases."""
    texts = [str(row["text"]) for row in ROWS]
    for spec in builtin_organisations():
        for alias in spec.aliases:
            texts += [f"Сообщили в {alias}: заседание.",
                      *(f"Итоги: {_inflected(alias, case)} — встреча." for case in ("gent", "datv", "ablt"))]
    return texts


def _warm(directory: Path) -> MorphologyCache:
    cache = MorphologyCache(directory)
    OrgMatcher(builtin_organisations(), analyse=cache.analyse)
    cache.save()
    return cache


def test_a_matcher_from_the_cache_finds_what_pymorphy3_finds_for_the_whole_catalogue(tmp_path: Path) -> None:
    assert _warm(tmp_path).missed > 100  # every Cyrillic alias word was analysed, then written
    cache = MorphologyCache(tmp_path)
    cached = OrgMatcher(builtin_organisations(), analyse=cache.analyse)
    assert cache.missed == 0  # every word came from the file
    direct = OrgMatcher(builtin_organisations())
    assert cached._stem_keys == direct._stem_keys
    texts = _texts()
    found = 0
    for text in texts:
        expected = [astuple(m) for m in direct.explain(text, "ru")]
        assert [astuple(m) for m in cached.explain(text, "ru")] == expected, text
        found += bool(expected)
    assert found > len(texts) // 2  # the inflected names are found, not just equally missed


def test_a_crawl_process_with_a_warm_cache_never_imports_pymorphy3(tmp_path: Path) -> None:
    cold = _round_matcher(tmp_path)
    assert cold == {"pymorphy3": True, "found": ["Совещания по взаимодействию и мерам доверия в Азии"]}
    assert (tmp_path / FILE_NAME).exists()  # written by the first process
    warm = _round_matcher(tmp_path)
    assert warm == {"pymorphy3": False, "found": ["Совещания по взаимодействию и мерам доверия в Азии"]}
    # without a cache directory every process loads the analyser, as before
    assert _round_matcher(None)["pymorphy3"] is True


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other-versions", "other-format", "bad-entry", "list"])
def test_a_corrupt_or_stale_cache_means_analysing_again(tmp_path: Path, damage: str) -> None:
    _warm(tmp_path)
    path = tmp_path / FILE_NAME
    text = path.read_text(encoding="utf-8")
    document = json.loads(text)
    if damage == "garbage":
        path.write_bytes(b"\xff\xfe\x00not json")
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2], encoding="utf-8")
    elif damage == "other-versions":
        document["versions"]["pymorphy3-dicts-ru"] = "0.0.1"
        path.write_text(json.dumps(document), encoding="utf-8")
    elif damage == "other-format":
        document["versions"]["format"] = morphology.FORMAT + 1
        path.write_text(json.dumps(document), encoding="utf-8")
    elif damage == "bad-entry":
        word = next(iter(document["words"]))
        document["words"][word] = [["not a stem"], []]
        path.write_text(json.dumps(document), encoding="utf-8")
    else:
        path.write_text("[]", encoding="utf-8")
    cache = MorphologyCache(tmp_path)
    matcher = OrgMatcher([CICA], analyse=cache.analyse)
    assert cache.missed > 0  # nothing was taken from the damaged file
    assert [m.form for m in matcher.find(INFLECTED)] == ["Совещания по взаимодействию и мерам доверия в Азии"]
    cache.save()  # and it is written again, whole
    again = MorphologyCache(tmp_path)
    OrgMatcher([CICA], analyse=again.analyse)
    assert again.missed == 0


def test_words_of_other_organisations_are_kept_when_the_file_is_written(tmp_path: Path) -> None:
    first = MorphologyCache(tmp_path)
    OrgMatcher([CICA], analyse=first.analyse)
    second = MorphologyCache(tmp_path)  # read before the first wrote: another crawl process
    OrgMatcher([OrganisationSpec(id="ADB", aliases=("Азиатский банк развития",))], analyse=second.analyse)
    first.save()
    second.save()
    both = MorphologyCache(tmp_path)
    OrgMatcher([CICA, OrganisationSpec(id="ADB", aliases=("Азиатский банк развития",))], analyse=both.analyse)
    assert both.missed == 0


def test_an_unwritable_cache_directory_is_not_an_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory", encoding="utf-8")
    cache = MorphologyCache(blocked / "cache")
    matcher = OrgMatcher([CICA], analyse=cache.analyse)
    cache.save()
    assert [m.form for m in matcher.find(INFLECTED)] == ["Совещания по взаимодействию и мерам доверия в Азии"]
    assert not list(tmp_path.glob("**/.morphology-*"))  # no temporary file left behind


def test_the_cache_directory_comes_from_the_environment_or_the_config(tmp_path: Path) -> None:
    assert default_cache_dir({"CACHE_DIRECTORY": "/var/cache/newsmon", "XDG_CACHE_HOME": "/x",
                              "HOME": "/home/u"}) == "/var/cache/newsmon"
    assert default_cache_dir({"XDG_CACHE_HOME": "/x", "HOME": "/home/u"}) == "/x/newsmon"
    assert default_cache_dir({"XDG_CACHE_HOME": "relative", "HOME": "/home/u"}) == "/home/u/.cache/newsmon"
    assert default_cache_dir({}) is None
    environ = {"HOME": str(tmp_path)}
    config = build_config({}, environ)
    assert build_job(config, []).cache_dir == str(tmp_path / ".cache" / "newsmon")
    config = build_config({"storage": {"cache_dir": str(tmp_path / "c")}}, environ)
    assert build_job(config, []).cache_dir == str(tmp_path / "c")
    config = build_config({"storage": {"cache_dir": ""}}, environ)  # no cache
    assert build_job(config, []).cache_dir is None
