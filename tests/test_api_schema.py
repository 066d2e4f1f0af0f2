"""The API as a generated client sees it: /openapi.json types every answer (the contract's ITEM,
story, status, the one error body), and schemathesis, run as its CLI against a real
`newsmon serve` over a database filled by a real crawl, finds nothing the document does not
say: no server error, only documented status codes and Content-Types, every body valid
against its schema, stateful links from a search result to its item and story."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.runner import crawl_round
from scheduler.web.schemas import Item, ItemDetail, LastError, Percentiles, SourceStatus, Version, WorkerStatus
from storage.db import make_engine, make_session_factory, upgrade
from storage.models import Item as ItemRow
from storage.queries import get_item, latency_stats, source_status, worker_status
from tests.plugins.db import _drop_pg_database, _new_pg_database, require_pg_server
from tests.plugins.sites import Site, rss
from tests.test_api import ITEM_KEYS, SAMPLE, client_for, load
from tests.test_crawl_end_to_end import fixture_sources, make_config, sync
from tests.test_crawl_stories import BODY

ROOT = Path(__file__).resolve().parents[1]
SEED = 20
MAX_EXAMPLES = 30  # per operation and phase (operations with parameters get over 100 in all)
TOKEN = "fuzz-token"
HOOKS = "tests.schemathesis_hooks"  # typed_json_answer: "any object" is not a documented answer
# Every check but positive_data_acceptance: `cursor` is opaque and `since` after `until` is a
# 422, so a request that is valid by the schema alone may rightly be refused.
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]
NULLABLE_ITEM_FIELDS = {"published_at", "language", "story_id"}
OPTIONAL_ITEM_FIELDS = {"removed"}  # sent (true) only for an item whose page is gone
REAL_SITES = ("mid-ru", "mid-telegram-ru")


# -- the document ------------------------------------------------------------------------------


def openapi(sessions: sessionmaker[Session], token: str | None = None) -> dict[str, Any]:
    with client_for(sessions, token) as client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = client.get("/openapi.json", headers=headers)
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def nullable(schema: dict[str, Any]) -> bool:
    return any(option.get("type") == "null" for option in schema.get("anyOf", []))


def test_every_json_answer_has_a_typed_schema(session_factory: sessionmaker[Session]) -> None:
    doc = openapi(session_factory)
    operations = [(path, op) for path, ops in doc["paths"].items() for op in ops.values()]
    assert len(operations) == 6
    for path, operation in operations:
        for status, response in operation["responses"].items():
            for media, content in response["content"].items():
                if media != "application/json":
                    assert path == "/metrics" and media.startswith("text/plain"), (path, media)
                    continue
                schema = resolve(doc, content["schema"])
                assert schema.get("type") == "object" and schema["properties"], (path, status)
                assert set(schema["required"]) == set(schema["properties"]) - OPTIONAL_ITEM_FIELDS, (path, status)


def test_item_schema_is_the_contracts_item(session_factory: sessionmaker[Session]) -> None:
    schemas = openapi(session_factory)["components"]["schemas"]
    item = schemas["Item"]
    assert set(item["properties"]) == ITEM_KEYS | OPTIONAL_ITEM_FIELDS
    assert set(item["required"]) == ITEM_KEYS
    assert item["properties"]["removed"]["type"] == "boolean"
    assert {name for name, field in item["properties"].items() if nullable(field)} == NULLABLE_ITEM_FIELDS
    assert item["properties"]["first_seen_at"]["format"] == "date-time"
    assert item["properties"]["matches"]["items"]["$ref"].endswith("/Match")
    assert set(schemas["Match"]["required"]) == {"organisation", "alias", "form", "snippet"}
    assert set(schemas["ItemDetail"]["properties"]) == ITEM_KEYS | OPTIONAL_ITEM_FIELDS | {"text", "versions", "story"}
    assert set(schemas["Version"]["required"]) == {"version", "fetched_at", "title", "text", "content_hash"}
    assert set(schemas["Error"]["properties"]) == {"detail", "parameter"}
    assert nullable(schemas["Error"]["properties"]["parameter"])


def test_errors_and_limits_are_documented(session_factory: sessionmaker[Session]) -> None:
    paths = openapi(session_factory)["paths"]
    search = paths["/api/items"]["get"]
    params = {p["name"]: p for p in search["parameters"]}
    assert params["limit"]["schema"].items() >= {"minimum": 1, "maximum": 1000, "default": 50}.items()
    assert "Opaque" in params["cursor"]["description"]
    assert all("ISO 8601" in params[name]["description"] for name in ("since", "until"))
    assert all(p["schema"]["type"] in ("string", "array", "integer") for p in params.values())  # no null
    for path, codes in {"/api/items": {"200", "422"}, "/api/items/{item_id}": {"200", "404", "422"},
                        "/api/stories/{story_id}": {"200", "404", "422"}, "/api/status": {"200"},
                        "/healthz": {"200"}, "/metrics": {"200"}}.items():
        responses = paths[path]["get"]["responses"]
        assert set(responses) == codes, path
        for code in codes - {"200"}:
            assert responses[code]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert search["responses"]["200"]["links"]["item"]["operationId"] == "getItem"


def test_with_a_token_every_operation_but_healthz_documents_401(session_factory: sessionmaker[Session]) -> None:
    assert "securitySchemes" not in openapi(session_factory).get("components", {})
    doc = openapi(session_factory, TOKEN)
    assert doc["components"]["securitySchemes"]["token"] == {
        "type": "http", "scheme": "bearer", "description": "The `[server] api_token` of newsmon.toml"}
    for path, operations in doc["paths"].items():
        operation = operations["get"]
        if path == "/healthz":
            assert "401" not in operation["responses"] and "security" not in operation
        else:
            assert operation["security"] == [{"token": []}]
            assert operation["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")


def test_readme_documents_every_operation(session_factory: sessionmaker[Session]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    api = readme[readme.index("## API"):]
    for path in openapi(session_factory)["paths"]:
        assert f"GET {path.replace('item_id', 'id').replace('story_id', 'id')}" in api, path
    for name in ("/openapi.json", "/docs", '"parameter"', "curl"):
        assert name in api, name


def _fields(model: type[Any]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


def test_response_models_keep_every_field_storage_gives(session_factory: sessionmaker[Session]) -> None:
    """A key that storage adds must join its model, or the API would drop it silently."""
    load(session_factory, SAMPLE)
    with session_factory.begin() as session:  # a removed item: storage then gives `removed` too
        row = session.get(ItemRow, 1)
        assert row is not None
        row.removed = row.versions[-1].removed = True
    with session_factory() as session:
        item = get_item(session, 1, versions=True, story=True)
        plain = get_item(session, 2)
        sources = source_status(session, datetime.now(UTC))
        latency = latency_stats(session)
        workers = worker_status(session)
    assert item is not None and sources and not workers
    assert set(item) | {"story"} == _fields(ItemDetail)
    assert plain is not None and set(plain) == ITEM_KEYS | {"text"}  # `removed` only when true
    assert set(plain) - {"text"} | OPTIONAL_ITEM_FIELDS == _fields(Item) == ITEM_KEYS | OPTIONAL_ITEM_FIELDS
    assert set(item["versions"][-1]) == _fields(Version)
    assert set(sources[0]) == _fields(SourceStatus)
    assert set(next(iter(latency.values()))) == _fields(Percentiles)
    assert _fields(LastError) == {"class", "message", "at"}
    assert {"id", "host", "pid", "heartbeat_at", "holds", "polls"} <= _fields(WorkerStatus)


# -- schemathesis against a real server --------------------------------------------------------


def feed(site: Site, name: str, items: list[dict[str, str]]) -> str:
    path = site.unique(f"/fuzz/{name}") + ".xml"
    site.set(path, rss(items), "application/rss+xml")
    return site.url(path)


def fill_by_crawl(site: Site, db_url: str) -> None:
    """Two real crawl rounds: real fixture sites, a story carried by two outlets, an undated
    item of a source without a language, a failing source, and an edit (version 2)."""
    now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    story = [{"title": "Руденко и Мустафаев обсудили СВМДА", "link": site.url(f"/fuzz/story/{n}"),
              "pubDate": now, "description": f"{prefix} {BODY}"}
             for n, prefix in enumerate(["БАКУ /Trend/ -", "Баку, 4 февраля, AZERTAC."])]
    edited = site.unique("/fuzz/edited") + ".xml"
    link = site.url(f"{edited}/1")

    def publish_edited(text: str) -> str:
        return site.set(edited, rss([{"title": "Заседание СВМДА", "link": link, "pubDate": now,
                                      "description": text}]), "application/rss+xml")

    own = [
        {"id": "outlet-a", "url": feed(site, "a", story[:1]), "language": "ru"},
        {"id": "outlet-b", "url": feed(site, "b", story[1:]), "language": "ru"},
        {"id": "undated", "url": feed(site, "undated", [{"title": "CICA без даты", "link": site.url("/fuzz/u/1"),
                                                         "description": "Новость о СВМДА без даты."}])},
        {"id": "edited", "url": publish_edited("Первая редакция: министры СВМДА встретились."), "language": "ru"},
        {"id": "blocked", "url": site.url("/faults/antibot")},
    ]
    real = [s for s in fixture_sources(site) if s["id"] in REAL_SITES]
    config = make_config(db_url, real + [{**s, "allow_private": True, "fetch_articles": False} for s in own],
                         obey_robots=False)
    sync(config)
    crawl_round(config, None, timeout=120)
    publish_edited("Вторая редакция: министры СВМДА встретились и приняли заявление.")
    crawl_round(config, ["edited"], timeout=120)
    engine = make_engine(db_url)
    with make_session_factory(engine)() as session:
        rows = session.scalars(select(ItemRow)).all()
        assert {r.source_id for r in rows} >= {*REAL_SITES, "outlet-a", "outlet-b", "undated", "edited"}
        assert max(r.version for r in rows) == 2
        assert any(r.published_at is None for r in rows) and any(r.language is None for r in rows)
        assert session.scalar(select(func.count(func.distinct(ItemRow.source_id))).where(
            ItemRow.story_id == next(r.story_id for r in rows if r.source_id == "outlet-a"))) == 2
    engine.dispose()


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Starts `newsmon serve` over a database; stops it afterwards."""
    started: list[Server] = []

    def start(db_url: str, token: str | None = None) -> Server:
        config = tmp_path / "newsmon.toml"
        config.write_text(f'[storage]\nurl = "{db_url}"\n'
                          + (f'[server]\napi_token = "{token}"\n' if token else ""), encoding="utf-8")
        port, log = free_port(), tmp_path / "serve.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "--config", str(config), "serve", "--port", str(port)],
            cwd=tmp_path, stdout=log.open("ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        server = Server(f"http://127.0.0.1:{port}", process, log)
        started.append(server)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"newsmon serve did not start: {log.read_text(errors='replace')}")

    yield start
    for server in started:
        server.process.terminate()
        server.process.wait(timeout=10)


@dataclass
class Run:
    returncode: int
    output: str
    cases: Counter[str]  # (method path) → test cases sent
    checks: Counter[str]  # check name → times run
    links: Counter[str]  # "GET /api/items -> [200] item -> GET /api/items/{item_id}" → steps
    report: dict[str, Any]


def schemathesis(server: Server, tmp_path: Path, *extra: str) -> Run:
    """`schemathesis run` against the server's own /openapi.json, with a fixed seed."""
    reports = tmp_path / "schemathesis"
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
               "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), *CHECKS,
               "--phases", "examples,coverage,fuzzing,stateful", "--generation-database", "none",
               "--workers", "1", "--no-color", "--report", "ndjson,json", "--report-dir", str(reports), *extra]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "SCHEMATHESIS_HOOKS": HOOKS})
    cases: Counter[str] = Counter()
    checks: Counter[str] = Counter()
    links: Counter[str] = Counter()
    for line in next(reports.glob("*.ndjson")).read_text(encoding="utf-8").splitlines():
        event = json.loads(line).get("ScenarioFinished")
        if event is None:
            continue
        recorder = event["recorder"]
        for case in recorder.get("cases", {}).values():
            value = case["value"]
            cases[f"{value['method']} {value['path']}"] += 1
            if case.get("is_transition_applied"):  # a stateful step with the linked value
                links[case["transition"]["id"]] += 1
        for results in recorder.get("checks", {}).values():
            checks.update(result["name"] for result in results)
    report = json.loads(next(reports.glob("*.json")).read_text(encoding="utf-8"))
    return Run(done.returncode, done.stdout + done.stderr, cases, checks, links, report)


OPERATIONS_WITH_PARAMETERS = ["GET /api/items", "GET /api/items/{item_id}", "GET /api/stories/{story_id}"]
OPERATIONS_WITHOUT = ["GET /api/status", "GET /healthz", "GET /metrics"]
LINKS = ["GET /api/items -> [200] item -> GET /api/items/{item_id}",
         "GET /api/items -> [200] story -> GET /api/stories/{story_id}",
         "GET /api/items/{item_id} -> [200] story -> GET /api/stories/{story_id}",
         "GET /api/stories/{story_id} -> [200] item -> GET /api/items/{item_id}"]


def assert_clean(run: Run, *checks: str, examples: int = 30) -> None:
    assert run.returncode == 0, run.output
    assert run.report["operations"].items() >= {"total": 6, "tested": 6, "errored": 0, "skipped": 0}.items()
    assert run.report["failures"] == [] and run.report["errors"] == [], run.output
    for operation in OPERATIONS_WITH_PARAMETERS:
        assert run.cases[operation] >= examples, (operation, run.cases)
    for operation in OPERATIONS_WITHOUT:  # one possible request: sent in each generating phase
        assert run.cases[operation] >= 2, (operation, run.cases)
    for check in ("not_a_server_error", "status_code_conformance", "content_type_conformance",
                  "response_schema_conformance", "negative_data_rejection", *checks):
        assert run.checks[check] >= 3 * examples, (check, run.checks)
    assert run.checks["typed_json_answer"] >= examples, run.checks  # ours (recorded less often)


@pytest.fixture(scope="module")
def crawled_sqlite(site: Site, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('crawled') / 'newsmon.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    fill_by_crawl(site, url)
    return url


@pytest.fixture(scope="module")
def crawled_postgresql(site: Site, pg_template: str | None) -> Iterator[str]:
    require_pg_server()
    url = _new_pg_database(pg_template)
    fill_by_crawl(site, url)
    yield url
    _drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def crawled(request: pytest.FixtureRequest) -> str:
    """A database filled by a real crawl, once per module for each backend."""
    return str(request.getfixturevalue(f"crawled_{request.param}"))


def test_schemathesis_finds_nothing(crawled: str, serve: Any, tmp_path: Path) -> None:
    run = schemathesis(serve(crawled), tmp_path)
    assert_clean(run)
    assert set(run.links) == set(LINKS), (run.links, run.output)


def test_schemathesis_with_a_token(crawled_sqlite: str, serve: Any, tmp_path: Path) -> None:
    """With an api_token the document says so, and schemathesis checks that a request without
    the token is refused (ignored_auth) while every authorised one conforms."""
    run = schemathesis(serve(crawled_sqlite, TOKEN), tmp_path, "--header", f"Authorization: Bearer {TOKEN}",
                       "--max-examples", "10", "--phases", "examples,coverage,fuzzing")
    assert_clean(run, "ignored_auth", examples=10)
