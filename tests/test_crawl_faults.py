"""Every fault of the fixture server in one crawl round: each costs only its own source one
error of the right class (RELIABILITY.md §6 A/B), and nothing hostile reaches the database."""

from __future__ import annotations

import time
import zlib
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from scheduler.config import build_config
from scheduler.runner import crawl_round
from storage.db import make_engine, make_session_factory
from storage.models import FetchLog, Item, ItemVersion, Source
from tests.plugins.sites import SENTINEL_TOKEN, Site, rss

pytestmark = pytest.mark.slow
TIMEOUT = 3.0
LIMIT = 1_000_000


def faults(site: Site) -> dict[str, tuple[str, str | None]]:
    """source id → (url, expected error class or None for ok)."""
    key = site.unique("/k").rsplit("/", 1)[1]
    private_links = site.set(site.unique("/feeds") + ".xml", rss([
        {"title": "Own host", "link": site.url("/own/1"), "description": "fine"},
        {"title": "Other loopback", "link": site.url("/x").replace("127.0.0.1", "127.0.0.2"),
         "description": "must not be fetched"},
        {"title": "Private net", "link": "http://10.0.0.1/internal", "description": "nor this"},
    ]))
    return {
        "slow-drip": (site.url("/faults/slow?seconds=30"), "timeout"),
        "huge": (site.url(f"/faults/huge?size={20 * LIMIT}&length=0"), "too-large"),
        "huge-declared": (site.url(f"/faults/huge?size={20 * LIMIT}"), "too-large"),
        "gzip-bomb": (site.url(f"/faults/gzip-bomb?size={100 * LIMIT}"), "too-large"),
        "server-error": (site.url("/faults/status/500"), "http-5xx"),
        "unavailable": (site.url("/faults/status/503?retry_after=3600"), "http-5xx"),
        "not-found": (site.url("/faults/status/404"), "http-4xx"),
        "flaky": (site.url(f"/faults/flaky/{key}?fail=1"), None),
        "loop": (site.url("/faults/loop/a"), "redirects"),
        "to-private": (site.url("/faults/redirect?to=http://169.254.169.254/latest/meta-data"), "ssrf"),
        "to-file": (site.url("/faults/redirect?to=file:///etc/passwd"), "ssrf"),
        "private-links": (private_links, "ssrf"),
        "antibot": (site.url("/faults/antibot"), "blocked"),
        "html-403": (site.url("/faults/html-403"), "blocked"),
        "html-feed": (site.url("/faults/html-feed"), "parse"),
        "xxe": (site.url("/faults/xxe"), None),
        "laughs": (site.url("/faults/laughs"), None),
        "cp1251": (site.url("/faults/cp1251/a?charset=1"), None),
        "cp1251-bare": (site.url("/faults/cp1251/b?charset=0&declaration=0"), None),
        "robots": (site.url("/private/feed.xml"), "robots"),
        "refused": ("http://127.0.0.1:9/feed.xml", "connect"),
        "lying-etag": (site.url(f"/faults/lying-etag/{key}"), None),
    }


def test_every_fault_costs_only_its_own_source(site: Site, sqlite_url: str) -> None:
    table = faults(site)
    sources = [{"id": sid, "url": url, "allow_private": True, "fetch_articles": sid == "private-links"}
               for sid, (url, _) in table.items()]
    config = build_config({"storage": {"url": sqlite_url}, "sources": sources,
                           "crawl": {"timeout": f"{TIMEOUT}s", "max_response_size": LIMIT,
                                     "obey_robots": True}}, {})
    canary_before = site.counters.get("canary", 0)
    started = time.monotonic()
    report = crawl_round(config, None, timeout=60)
    elapsed = time.monotonic() - started

    got = {e.source_id: e.error_class for e in report.sources}
    assert got == {sid: expected for sid, (_, expected) in table.items()}, report.sources
    assert not report.timed_out and report.returncode == 0
    # The slow drip is cut by the whole-request deadline, not by the round's.
    assert elapsed < TIMEOUT + 10
    assert site.counters.get("canary", 0) == canary_before  # no entity fetched anything

    with make_session_factory(make_engine(sqlite_url))() as session:
        stored = _stored_strings(session)
        assert not any(SENTINEL_TOKEN in s for s in stored)
        assert max(len(s) for s in stored) < 300_000  # entities never expanded without bound
        titles = {i.source_id: i.title for i in session.scalars(select(Item))}
        assert titles["cp1251"].startswith("Совещание по взаимодействию")
        assert titles["cp1251-bare"].startswith("Совещание по взаимодействию")
        own = session.scalars(select(Item.title).where(Item.source_id == "private-links")).all()
        assert "Own host" in own
        unavailable = session.get(Source, "unavailable")
        assert unavailable is not None and unavailable.next_poll_at is not None
        wait = (unavailable.next_poll_at - datetime.now(UTC)).total_seconds()
        assert wait > 3600 * 0.85  # Retry-After: 3600 honoured (minus jitter)
        logs = session.scalars(select(FetchLog).where(FetchLog.source_id == "gzip-bomb")).all()
        assert logs[0].error_class == "too-large"
    # Retries: 500 is tried 3 times (RETRY_TIMES = 2); a long Retry-After is not waited for.
    assert len(site.requests("/faults/status/500")) >= 3
    assert len([r for r in site.requests() if r.path.startswith("/faults/status/503")]) == 1
    assert not [r for r in site.requests() if r.path == "/x"]  # 127.0.0.2 never reached here

    again = crawl_round(config, ["lying-etag", "cp1251"], timeout=60).by_source()
    assert again["lying-etag"].outcome == "not-modified"  # same bytes, new ETag: not parsed
    assert again["cp1251"].outcome == "not-modified"


def _stored_strings(session: Any) -> list[str]:
    out: list[str] = []
    for item in session.scalars(select(Item)):
        out += [item.title, item.text, item.url, item.canonical_url]
    for version in session.scalars(select(ItemVersion)):
        out += [version.title, version.text]
        if version.raw:
            out.append(zlib.decompress(version.raw).decode("utf-8", "replace"))
    for log in session.scalars(select(FetchLog)):
        out.append(log.message or "")
    return out
