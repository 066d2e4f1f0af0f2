"""What keeps a crawl process small: the Scrapy components a round never uses are not even
imported (Scrapy imports a component set to None), and the matcher's Russian dictionaries are
freed once the round's matcher is compiled, without the matcher losing inflected forms."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from crawler import matching
from crawler.job import CrawlJob
from crawler.organisations import OrganisationSpec
from crawler.polls import RoundContext
from crawler.settings import UNUSED_COMPONENTS, round_settings
from crawler.sources import SourceSpec

ROOT = Path(__file__).resolve().parents[1]

# Loads every component Scrapy would load for a round's settings, the way its middleware
# managers do (getwithbase normalises each key with load_object), then lists what is imported.
LOAD_COMPONENTS = """
import json, sys
from scrapy.settings import Settings
from scrapy.utils.conf import build_component_list
from scrapy.utils.misc import load_object
from crawler.job import CrawlJob
from crawler.settings import round_settings

settings = Settings(round_settings(CrawlJob.model_validate_json(sys.stdin.read())))
loaded = []
for name in ("EXTENSIONS", "DOWNLOADER_MIDDLEWARES", "SPIDER_MIDDLEWARES", "ITEM_PIPELINES"):
    for path in build_component_list(settings.getwithbase(name)):
        loaded.append(load_object(path).__module__)
print(json.dumps({"loaded": loaded, "modules": sorted(sys.modules)}))
"""


def _job() -> CrawlJob:
    return CrawlJob(database_url="sqlite://", sources=(SourceSpec(id="a", url="https://example.org/feed"),))


def test_unused_scrapy_components_are_never_imported() -> None:
    done = subprocess.run([sys.executable, "-c", LOAD_COMPONENTS], input=_job().model_dump_json(),
                          capture_output=True, text=True, check=True, cwd=ROOT)
    result = json.loads(done.stdout)
    modules = set(result["modules"])
    for paths in UNUSED_COMPONENTS.values():
        for path in paths:
            assert path.rsplit(".", 1)[0] not in modules, path
    # what the two biggest of them would have brought in
    assert not {"aiohttp", "tldextract", "requests"} & modules
    # the round's own components and Scrapy's needed ones are still there
    assert "crawler.pipelines" in result["loaded"] and "crawler.safety" in result["loaded"]
    assert "scrapy.extensions.closespider" in result["loaded"]
    assert "scrapy.downloadermiddlewares.redirect" in result["loaded"]


def test_round_settings_keep_the_rest_of_scrapys_base_lists() -> None:
    from scrapy.settings import default_settings

    settings = round_settings(_job())
    for name, unused in UNUSED_COMPONENTS.items():
        base = getattr(default_settings, f"{name}_BASE")
        assert set(settings[f"{name}_BASE"]) == set(base) - set(unused)


def test_the_rounds_matcher_frees_the_morphology_and_still_finds_inflected_forms() -> None:
    cica = OrganisationSpec(id="CICA", name="CICA",
                            aliases=["СВМДА", "Совещание по взаимодействию и мерам доверия в Азии"])
    context = RoundContext(job=CrawlJob(database_url="sqlite://", sources=(), organisations=(cica,)),
                           sessions=None, ledger=None)  # type: ignore[arg-type]
    matcher = context.matcher
    assert matching._morph.cache_info().currsize == 0  # released
    found = matcher.find("Делегация прибыла на заседание Совещания по взаимодействию и мерам доверия в Азии.")
    assert [m.form for m in found] == ["Совещания по взаимодействию и мерам доверия в Азии"]
    assert context.matcher is matcher  # built once per round
