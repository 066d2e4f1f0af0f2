"""Replays every file of feedparser's test corpus (../shared/corpus/feedparser) through one
crawl round, served unchanged (with the headers its comments name) by the fixture server: no
uncaught exception, every stored string is text, nothing executable survives."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from scheduler.config import build_config
from scheduler.runner import crawl_round
from storage.db import make_engine, make_session_factory
from storage.models import Item, ItemVersion
from tests.plugins.sites import Site

pytestmark = pytest.mark.slow
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "feedparser"
HEADER = re.compile(rb"^Header:\s*([\w-]+):\s*(.*?)\s*$", re.M)
EXECUTABLE = re.compile(r"<script|javascript:|\bon[a-z]+\s*=", re.I)


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the feedparser corpus is missing at {CORPUS}")
        pytest.skip(f"no feedparser corpus at {CORPUS}")
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix in (".xml", ".json"))


def publish(site: Site, files: list[Path]) -> dict[str, tuple[Path, str]]:
    """Serve each file at its own path; source id → (file, URL)."""
    prefix = site.unique("/corpus")
    sources = {}
    for index, file in enumerate(files):
        body = file.read_bytes()
        headers = {name.decode(): value.decode("latin-1") for name, value in HEADER.findall(body[:2048])}
        content_type = headers.pop("Content-type", headers.pop("Content-Type", "text/xml"))
        if file.suffix == ".json":
            content_type = "application/json"
        url = site.set(f"{prefix}/{file.relative_to(CORPUS)}", body, content_type,
                       headers=headers, validators=False)
        sources[f"c{index}"] = (file, url)
    return sources


def test_corpus_replay(site: Site, sqlite_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    files = corpus_files()
    published = publish(site, files)
    by_source = {sid: file for sid, (file, _) in published.items()}
    config = build_config({
        "storage": {"url": sqlite_url},
        "crawl": {"timeout": "10s", "fetch_articles": False, "obey_robots": False,
                  "concurrency_per_host": 8},
        "sources": [{"id": sid, "url": url, "allow_private": True}
                    for sid, (_, url) in published.items()],
    }, {})
    report = crawl_round(config, None, timeout=240)
    print(f"corpus round: {report.seconds:.1f}s for {len(files)} files")
    stderr = capfd.readouterr().err

    assert report.returncode == 0 and not report.timed_out
    assert len(report.sources) == len(files)
    classes = {e.error_class for e in report.sources}
    assert classes <= {None, "parse"}, classes
    assert "Traceback" not in stderr, stderr[-3000:]
    # Most corpus entries have a link; an article that several corpus feeds carry is one item,
    # new in the first and linked (unchanged) in the others.
    assert sum(e.new for e in report.sources) > 40
    assert sum(e.new + e.unchanged for e in report.sources) > 100

    sanitize = {sid for sid, f in by_source.items() if "sanitize" in f.parts}
    with make_session_factory(make_engine(sqlite_url))() as session:
        rows: list[Any] = list(session.execute(select(Item.source_id, Item.title, Item.text,
                                                      Item.url, Item.canonical_url)))
        versions = list(session.execute(select(ItemVersion.title, ItemVersion.text)))
    for row in rows:
        assert all(isinstance(value, str) for value in row[1:]), row
    for row in versions:
        assert all(isinstance(value, str) for value in row), row
    leaks = [(by_source[r.source_id].name, m.group(0)) for r in rows if r.source_id in sanitize
             for m in [EXECUTABLE.search(r.title + "\n" + r.text)] if m]
    assert not leaks, leaks[:20]
