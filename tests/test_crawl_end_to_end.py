"""End-to-end crawl rounds (`python -m crawler` in a subprocess) against the fixture server:
every built-in source's fixture site in one round, a second round that changes nothing, and
`newsmon crawl` / `newsmon status` on top."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from crawler.catalogue import builtin_sources
from crawler.urls import canonical_url
from scheduler.cli import cli
from scheduler.config import AppConfig, build_config
from scheduler.runner import crawl_round
from storage.db import make_engine, make_session_factory
from storage.models import AlertEvent, FetchLog, Item, ItemVersion, Match, Source
from storage.repository import SourceRow, sync_sources
from tests.plugins.sites import Site, rss, site_manifest

pytestmark = pytest.mark.slow
DOCUMENT_ROLES = ("feed", "listing", "api", "channel")


def fixture_sources(site: Site) -> list[dict[str, Any]]:
    """The built-in catalogue, each source pointed at its fixture site on the local server."""
    out = []
    for spec in builtin_sources():
        manifest = site_manifest(spec.id)
        document = next(f for f in manifest["files"] if f["role"] in DOCUMENT_ROLES)
        data = spec.model_dump(exclude_defaults=True)
        data.update(url=site.url(f"/sites/{spec.id}{document['path']}"), allow_private=True,
                    enabled=True)
        out.append(data)
    return out


def expected_urls(site: Site, source_id: str) -> list[str]:
    """The CICA item's canonical URL: on the local server, or as published when the source
    builds links itself (telegram permanent links, a JSON source's link_template)."""
    manifest = site_manifest(source_id)
    url = original = manifest["expect"]["cica_url"]
    for host in sorted(manifest["hosts"], key=len, reverse=True):
        for scheme in ("https://", "http://"):
            url = url.replace(scheme + host, site.url(f"/sites/{source_id}"))
    root_relative = site.url(urlsplit(original)._replace(scheme="", netloc="").geturl())
    return [canonical_url(url), canonical_url(original), canonical_url(root_relative)]


def make_config(db_url: str, sources: list[dict[str, Any]], **crawl: Any) -> AppConfig:
    return build_config({
        "storage": {"url": db_url}, "sources": sources,
        "crawl": {"timeout": "5s", "interval": "10m", **crawl},
        "alerts": [{"kind": "webhook", "id": "hook", "url": "http://127.0.0.1:9/hook"}],
    }, {})


def sync(config: AppConfig) -> None:
    engine = make_engine(config.storage.url)
    with make_session_factory(engine).begin() as session:
        sync_sources(session, [SourceRow(id=s.id, kind=s.kind, url=s.url, name=s.name,
                                         enabled=s.enabled) for s in config.sources],
                     now=datetime.now(UTC))
    engine.dispose()


def test_catalogue_round_stores_every_source_and_a_second_round_changes_nothing(
        site: Site, db_url: str) -> None:
    config = make_config(db_url, fixture_sources(site))
    sync(config)
    progress: list[dict[str, Any]] = []
    report = crawl_round(config, None, timeout=60, on_event=progress.append)

    outcomes = {e.source_id: (e.outcome, e.error_class, e.message) for e in report.sources}
    assert outcomes == {s.id: ("ok", None, outcomes[s.id][2]) for s in config.sources}, outcomes
    assert any(e["kind"] == "progress" for e in progress)
    sessions = make_session_factory(make_engine(db_url))
    with sessions() as session:
        for spec in config.sources:
            urls = expected_urls(site, spec.id)
            item = session.scalar(select(Item).where(
                Item.source_id == spec.id, Item.canonical_url.in_(urls)))
            assert item is not None, f"{spec.id}: no item for {urls}"
            assert "CICA" in {m.organisation for m in item.matches}, (spec.id, item.title)
        items_before = session.scalar(select(func.count()).select_from(Item))
        versions_before = session.scalar(select(func.count()).select_from(ItemVersion))
        alerts_before = session.scalar(select(func.count()).select_from(AlertEvent))
        assert session.scalar(select(func.count()).select_from(Match)) >= len(config.sources)
        assert all(s.etag or s.body_hash for s in session.scalars(select(Source)))

    site_log_before = len(site.requests())
    second = crawl_round(config, None, timeout=60)
    assert {e.outcome for e in second.sources} == {"not-modified"}, second.sources
    assert sum(e.new + e.updated for e in second.sources) == 0
    conditional = [r for r in site.requests()[site_log_before:] if r.path.startswith("/sites/")]
    assert conditional and all("If-None-Match" in r.headers for r in conditional)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == items_before
        assert session.scalar(select(func.count()).select_from(ItemVersion)) == versions_before
        assert session.scalar(select(func.count()).select_from(AlertEvent)) == alerts_before
        assert session.scalar(select(func.count()).select_from(FetchLog)) == 2 * len(config.sources)


def publish_listing(site: Site, pages: dict[int, str]) -> str:
    """Listing pages at PATH (page 1) and PATH?page=N, each with one item and ``pages[n]``
    as extra markup (its rel="next" link); returns PATH."""
    path = site.unique("/rel")
    for page, markup in pages.items():
        head, _, body = markup.rpartition("|")
        site.set(path if page == 1 else f"{path}?page={page}", (
            f"<html><head>{head}</head><body>"
            f'<div class="news"><a href="{path}/a{page}">Story {page}</a></div>{body}'
            "</body></html>").encode(), "text/html; charset=utf-8")
    return path


def test_listings_follow_rel_next_without_a_next_selector(site: Site, sqlite_url: str) -> None:
    three = {1: '<link rel="next" href="?page=2">|',
             2: '|<a class="next" rel="nofollow next" href="?page=3">Next</a>',
             3: "|"}
    paths = {"rel3": publish_listing(site, three), "rel2": publish_listing(site, three),
             "loop": publish_listing(site, {1: '|<a rel="next" href="?page=2">2</a>',
                                            2: '<link rel="next" href="?page=3">|',
                                            3: '|<a rel="Next" href="?page=2">back to 2</a>'}),
             "self": publish_listing(site, {1: '|<a rel="next" href="?page=2">2</a>',
                                            2: '|<a rel="next" href="?page=2#top">again</a>'})}
    max_pages = {"rel3": 3, "rel2": 2, "loop": 10, "self": 10}
    sources = [{"id": sid, "kind": "html", "url": site.url(path), "allow_private": True,
                "fetch_articles": False, "max_pages": max_pages[sid],
                "selectors": {"item": "div.news"}} for sid, path in paths.items()]
    report = crawl_round(make_config(sqlite_url, sources), None, timeout=60).by_source()

    assert {sid: (report[sid].outcome, report[sid].new) for sid in paths} == {
        "rel3": ("ok", 3), "rel2": ("ok", 2), "loop": ("ok", 3), "self": ("ok", 2)}
    assert len(site.requests(f"{paths['rel2']}?page=2")) == 1
    assert not site.requests(f"{paths['rel2']}?page=3")  # max_pages = 2
    for sid, pages in (("loop", 3), ("self", 2)):  # every page read once, then the loop ends
        logged = [r.path for r in site.requests() if r.path.split("?")[0] == paths[sid]]
        assert sorted(logged) == sorted([paths[sid]] + [f"{paths[sid]}?page={n}"
                                                        for n in range(2, pages + 1)])
    with make_session_factory(make_engine(sqlite_url))() as session:
        stored = set(session.scalars(select(Item.url).where(Item.source_id == "rel3")))
    assert stored == {site.url(f"{paths['rel3']}/a{n}") for n in (1, 2, 3)}


def test_changed_item_is_a_new_version_and_pages_are_followed(site: Site, sqlite_url: str) -> None:
    path = site.unique("/feeds")
    link = site.url(f"{path}/item/1")
    site.set(f"{path}.xml", rss([{"title": "First title", "link": link,
                                  "description": "CICA ministers met."}]))
    listing = site.unique("/listing")
    for page, nxt in ((1, 2), (2, 3), (3, None)):
        more = f'<a class="next" href="{listing}/{nxt}">next</a>' if nxt else ""
        site.set(f"{listing}/{page}", (
            f'<html><body><div class="news"><a href="{listing}/a{page}">Story {page}</a>'
            f"<p>Summary {page}</p></div>{more}</body></html>").encode(), "text/html; charset=utf-8")
    sources = [
        {"id": "feed", "url": site.url(f"{path}.xml"), "allow_private": True, "fetch_articles": False},
        {"id": "pages", "kind": "html", "url": site.url(f"{listing}/1"), "allow_private": True,
         "fetch_articles": False, "max_pages": 2,
         "selectors": {"item": "div.news", "link": "a::attr(href)", "title": "a::text",
                       "summary": "p::text", "next": "a.next::attr(href)"}},
    ]
    config = make_config(sqlite_url, sources)
    first = crawl_round(config, None, timeout=60).by_source()
    assert (first["feed"].new, first["pages"].new) == (1, 2)  # max_pages = 2: page 3 not read
    assert not site.requests(f"{listing}/3")

    site.set(f"{path}.xml", rss([{"title": "Second title", "link": link + "?utm_source=x",
                                  "description": "CICA ministers met again."}]))
    second = crawl_round(config, ["feed"], timeout=60).by_source()
    assert (second["feed"].outcome, second["feed"].updated, second["feed"].new) == ("ok", 1, 0)
    with make_session_factory(make_engine(sqlite_url))() as session:
        item = session.scalar(select(Item).where(Item.source_id == "feed"))
        assert item is not None and item.version == 2
        assert [v.title for v in item.versions] == ["First title", "Second title"]


def test_cli_crawl_prints_a_summary_and_status_reports_sources(
        site: Site, tmp_path: Any) -> None:
    ok = site.set(site.unique("/feeds") + ".xml",
                  rss([{"title": "CICA summit", "link": site.url("/cli/1"), "description": "x"}]))
    config_file = tmp_path / "newsmon.toml"
    config_file.write_text(f"""
[storage]
url = "sqlite:///{tmp_path / 'cli.db'}"
[crawl]
timeout = "5s"
fetch_articles = false
[[sources]]
id = "good"
url = "{ok}"
allow_private = true
[[sources]]
id = "broken"
url = "{site.url('/faults/status/404')}"
allow_private = true
""", encoding="utf-8")
    runner = CliRunner()
    before = runner.invoke(cli, ["--config", str(config_file), "status", "--format", "json"],
                           catch_exceptions=False)
    assert before.exit_code == 0, before.output
    # configured, not polled yet: listed (a user checks the file was read before starting)
    assert [(s["id"], s["enabled"], s["last_poll"], s["items"]) for s in json.loads(before.output)["sources"]] == [
        ("broken", True, None, 0), ("good", True, None, 0)]
    result = runner.invoke(cli, ["--config", str(config_file), "crawl"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "good" in result.output and "broken" in result.output and "http-4xx" in result.output

    unknown = runner.invoke(cli, ["--config", str(config_file), "crawl", "--source", "nope"])
    assert unknown.exit_code == 2 and "nope" in unknown.output

    failing = runner.invoke(cli, ["--config", str(config_file), "crawl", "--source", "broken"])
    assert failing.exit_code == 1

    status = runner.invoke(cli, ["--config", str(config_file), "status", "--format", "json"],
                           catch_exceptions=False)
    assert status.exit_code == 0, status.output
    doc = json.loads(status.output)
    by_id = {s["id"]: s for s in doc["sources"]}
    assert set(doc) >= {"sources", "workers"}
    keys = {"id", "enabled", "last_poll", "last_success", "last_new_item", "next_poll", "items",
            "failures", "silent", "last_error"}
    assert keys <= set(by_id["good"])
    assert by_id["good"]["items"] == 1 and by_id["good"]["last_error"] is None
    assert by_id["broken"]["failures"] == 2
    assert by_id["broken"]["last_error"]["class"] == "http-4xx"
    table = runner.invoke(cli, ["--config", str(config_file), "status"], catch_exceptions=False)
    assert table.exit_code == 0 and "broken" in table.output
