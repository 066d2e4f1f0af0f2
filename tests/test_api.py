"""The HTTP JSON API against a real database (SQLite and PostgreSQL): filters, paging, errors,
/metrics, /api/status and token access."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():  # starlette 1.x prefers the httpx2 fork; httpx is what is installed
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from crawler.sources import SourceSpec
from scheduler.config import AppConfig, ServerSettings
from scheduler.web.app import create_app
from storage.models import AlertEvent
from storage.repository import PollOutcome, record_poll
from storage.transfer import Importer

ITEM_KEYS = {"id", "source", "sources", "url", "canonical_url", "title", "published_at", "first_seen_at",
             "language", "organisations", "matches", "story_id", "version", "content_hash"}
FORMS = {"CICA": "СВМДА", "SCO": "ШОС"}


def record(n: int, title: str, text: str, *, source: str = "mid-ru", orgs: tuple[str, ...] = (),
           day: int = 1, story: int | None = None, versions: int = 1, url: str | None = None,
           snippet: str | None = None) -> dict[str, Any]:
    """One item in the export format (what `newsmon import` reads)."""
    published = datetime(2025, 2, day, 9, 30, tzinfo=UTC)
    link = url or f"https://example.org/news/{n}"
    return {
        "id": n, "source": source, "url": link, "canonical_url": f"https://example.org/news/{n}",
        "title": title, "published_at": published.isoformat(),
        "first_seen_at": (published + timedelta(minutes=3)).isoformat(), "language": "ru",
        "organisations": list(orgs),
        "matches": [{"organisation": o, "alias": FORMS.get(o, o), "form": FORMS.get(o, o),
                     "snippet": snippet or f"… {FORMS.get(o, o)} …"} for o in orgs],
        "story_id": story or n, "version": versions, "content_hash": f"sha256:{n}-{versions}",
        "text": text,
        "versions": [{"version": v, "fetched_at": (published + timedelta(hours=v)).isoformat(), "title": title,
                      "text": text if v == versions else f"{text} (черновик {v})",
                      "content_hash": f"sha256:{n}-{v}"} for v in range(1, versions + 1)],
    }


SAMPLE = [
    record(1, "Руденко и Мустафаев обсудили СВМДА", "Совещание по взаимодействию и мерам доверия в Азии.",
           orgs=("CICA",), day=4, versions=2),
    record(2, "Заседание ШОС в Астане", "Шанхайская организация сотрудничества провела заседание.",
           source="tass", orgs=("SCO",), day=3),
    record(3, "Football results", "Nothing about organisations here.", source="tass", day=2),
    record(4, "СВМДА и ШОС: совместное заявление", "Обе организации приняли заявление.",
           source="interfax", orgs=("CICA", "SCO"), day=1, story=1),
]


def load(sessions: sessionmaker[Session], records: list[dict[str, Any]]) -> None:
    """Import records through storage.transfer.Importer, as `newsmon import` does."""
    with sessions() as session:
        importer = Importer(session, datetime.now(UTC))
        for number, rec in enumerate(records, 1):
            importer.line(number, json.dumps(rec, ensure_ascii=False))
        session.commit()
        assert not importer.report.errors, importer.report.errors


def client_for(sessions: sessionmaker[Session], token: str | None = None) -> TestClient:
    config = AppConfig(server=ServerSettings(api_token=token))
    return TestClient(create_app(config, sessions))


@pytest.fixture
def api(session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    load(session_factory, SAMPLE)
    with client_for(session_factory) as client:
        yield client


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def titles(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["title"] for item in response.json()["items"]]


def test_items_newest_first_with_contract_shape(api: TestClient) -> None:
    body = api.get("/api/items").json()
    assert [i["title"][:8] for i in body["items"]] == ["Руденко ", "Заседани", "Football", "СВМДА и "]
    assert body["next_cursor"] is None
    assert all(set(i) == ITEM_KEYS for i in body["items"])
    assert body["items"][0]["matches"][0] == {"organisation": "CICA", "alias": "СВМДА", "form": "СВМДА",
                                              "snippet": "… СВМДА …"}


FILTERS = [
    ("q=СВМДА", ["Руденко и Мустафаев обсудили СВМДА", "СВМДА и ШОС: совместное заявление"]),
    ("q=%22мерам доверия%22", ["Руденко и Мустафаев обсудили СВМДА"]),
    ("org=SCO", ["Заседание ШОС в Астане", "СВМДА и ШОС: совместное заявление"]),
    ("org=SCO&org=CICA&source=interfax", ["СВМДА и ШОС: совместное заявление"]),
    ("source=tass&source=interfax&until=2025-02-02", ["Football results", "СВМДА и ШОС: совместное заявление"]),
    ("since=2025-02-03&until=2025-02-03T23:00:00%2B00:00", ["Заседание ШОС в Астане"]),
    ("since=2025-02-03T12:30:00%2B03:00", ["Руденко и Мустафаев обсудили СВМДА", "Заседание ШОС в Астане"]),
    ("q=СВМДА -ШОС", ["Руденко и Мустафаев обсудили СВМДА"]),
    ("q=&org=&source=&since=&until=", ["Руденко и Мустафаев обсудили СВМДА", "Заседание ШОС в Астане",
                                       "Football results", "СВМДА и ШОС: совместное заявление"]),
]


def test_filters(api: TestClient) -> None:
    for query, expected in FILTERS:
        assert titles(api.get(f"/api/items?{query}")) == expected, query


def test_cursor_pages_through_everything_once(api: TestClient) -> None:
    seen, cursor, pages = [], None, 0
    while True:
        response = api.get("/api/items", params={"limit": 1, **({"cursor": cursor} if cursor else {})})
        page = ids(response)
        seen += page
        cursor = response.json()["next_cursor"]
        pages += 1
        if cursor is None:
            break
    assert len(seen) == 4 and len(set(seen)) == 4
    assert seen == ids(api.get("/api/items"))
    assert pages == 5  # the last page is empty: 4 items, one per page
    first = api.get("/api/items", params={"limit": 2}).json()
    second = api.get("/api/items", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [i["id"] for i in first["items"] + second["items"]] == seen


def test_cursor_keeps_the_filter(api: TestClient) -> None:
    first = api.get("/api/items", params={"org": "CICA", "limit": 1}).json()
    rest = api.get("/api/items", params={"org": "CICA", "limit": 1, "cursor": first["next_cursor"]}).json()
    assert [i["title"][:5] for i in first["items"] + rest["items"]] == ["Руден", "СВМДА"]


BAD_QUERIES = [
    "since=yesterday", "until=2025-13-01", "since=2025-02-05&until=2025-02-01", "limit=0", "limit=1001",
    "limit=ten", "cursor=nonsense", "cursor=WyJ4IiwxXQ", "cursor=WyIyMDI1LTAyLTA0VDA5OjMwOjAwIiwieCJd",
    "cursor=%00%ff",
]
BAD_IDS = ["/api/items/abc", "/api/items/1.5", "/api/items/0", "/api/items/99999999999999999999999",
           "/api/stories/x", "/items/abc"]


def test_bad_parameters_are_422_with_a_reason(api: TestClient) -> None:
    """One error body, {"detail", "parameter"}, whether FastAPI or newsmon found the fault."""
    for query in [*BAD_QUERIES, "since=null", "until=null", "limit=", "since=0001-01-01T00:00:00%2B05:00",
                  "cursor=WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzA1OjAwIiwxXQ"]:
        response = api.get(f"/api/items?{query}")
        assert response.status_code == 422, (query, response.text)
        body = response.json()
        assert set(body) == {"detail", "parameter"}, body
        assert body["parameter"] == query.split("=")[0] and body["detail"].startswith(f"{body['parameter']}: ")
    for path in BAD_IDS:
        response = api.get(path)
        assert response.status_code == 422, path
        assert response.json()["parameter"] == ("story_id" if "stories" in path else "item_id")
    assert api.get("/api/items?limit=0").json() == {
        "detail": "limit: Input should be greater than or equal to 1", "parameter": "limit"}
    assert api.get("/api/items?until=null").json() == {
        "detail": "until: 'null' is not an ISO date or time (e.g. 2025-02-04 or 2025-02-04T09:30:00+03:00)",
        "parameter": "until"}


def test_unknown_ids_are_404(api: TestClient) -> None:
    assert api.get("/api/items/9999").json() == {"detail": "no item 9999", "parameter": None}
    assert api.get("/api/stories/9999").json() == {"detail": "no story 9999", "parameter": None}
    assert api.get("/api/nowhere").json() == {"detail": "Not Found", "parameter": None}
    assert api.get("/items/9999").status_code == 404
    for path in ["/api/items/9999", "/api/stories/9999", "/api/nowhere"]:
        assert api.get(path).status_code == 404
    response = api.post("/api/items")
    assert response.status_code == 405 and response.headers["allow"] == "GET"
    assert response.json() == {"detail": "Method Not Allowed", "parameter": None}


def test_item_with_text_versions_and_story(api: TestClient) -> None:
    first = api.get("/api/items?q=Руденко").json()["items"][0]
    item = api.get(f"/api/items/{first['id']}").json()
    assert set(item) == ITEM_KEYS | {"text", "versions", "story"}
    assert item["text"] == "Совещание по взаимодействию и мерам доверия в Азии."
    assert [v["version"] for v in item["versions"]] == [1, 2]
    assert item["versions"][0]["text"].endswith("(черновик 1)")
    assert sorted(s["title"][:5] for s in item["story"]) == ["Руден", "СВМДА"]
    story = api.get(f"/api/stories/{item['story_id']}").json()
    assert story["id"] == item["story_id"] and len(story["items"]) == 2


def _add_ops_rows(sessions: sessionmaker[Session]) -> None:
    now = datetime(2025, 2, 5, 12, 0, tzinfo=UTC)
    with sessions() as session:
        for outcome, cls in (("ok", None), ("ok", None), ("error", "timeout"),
                                            ("error", "blocked"), ("not-modified", None)):
            record_poll(session, PollOutcome("tass", now, now, outcome, error_class=cls))
        for n, delivered in enumerate([True, True, False]):
            session.add(AlertEvent(
                event_id=f"e{n}", channel="ops", organisations=json.dumps(["CICA"] if n else ["CICA", "SCO"]),
                payload="{}", created_at=now, published_at=now - timedelta(minutes=10),
                first_seen_at=now - timedelta(minutes=8), attempts=1, next_attempt_at=now,
                delivered_at=now if delivered else None))
        session.commit()


def test_metrics_parse(api: TestClient, session_factory: sessionmaker[Session]) -> None:
    _add_ops_rows(session_factory)
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(response.text) for s in family.samples}
    assert samples[("newsmon_items", ())] == 4
    assert samples[("newsmon_matched_items", (("organisation", "CICA"),))] == 2
    assert samples[("newsmon_matched_items", (("organisation", "SCO"),))] == 2
    assert samples[("newsmon_alert_events", (("organisation", "CICA"), ("state", "delivered")))] == 2
    assert samples[("newsmon_alert_events", (("organisation", "CICA"), ("state", "pending")))] == 1
    assert samples[("newsmon_alert_events", (("organisation", "SCO"), ("state", "delivered")))] == 1
    assert samples[("newsmon_outbox_backlog", ())] == 1
    assert samples[("newsmon_polls_total", (("outcome", "ok"), ("source", "tass")))] == 2
    assert samples[("newsmon_polls_total", (("outcome", "error"), ("source", "tass")))] == 2
    assert samples[("newsmon_poll_errors_total", (("class", "timeout"), ("source", "tass")))] == 1
    stage = (("stage", "first_seen_to_delivered"),)
    assert samples[("newsmon_detection_latency_seconds_count", stage)] == 2
    assert samples[("newsmon_detection_latency_seconds_sum", stage)] == 2 * 480
    assert samples[("newsmon_detection_latency_seconds_bucket", (("le", "600.0"), *stage))] == 2
    assert samples[("newsmon_detection_latency_seconds_bucket", (("le", "300.0"), *stage))] == 0


def test_status_shape(api: TestClient, session_factory: sessionmaker[Session]) -> None:
    _add_ops_rows(session_factory)
    body = api.get("/api/status").json()
    assert set(body) == {"sources", "workers", "latency"}
    assert {s["id"] for s in body["sources"]} == {"mid-ru", "tass", "interfax"}
    tass = next(s for s in body["sources"] if s["id"] == "tass")
    assert tass["items"] == 2 and {"last_poll", "failures", "silent", "last_error", "next_poll"} <= set(tass)
    assert body["workers"] == []
    assert body["latency"]["first_seen_to_delivered"]["count"] == 2


def test_status_lists_configured_sources_before_their_first_poll(session_factory: sessionmaker[Session]) -> None:
    load(session_factory, SAMPLE)
    config = AppConfig(sources=(SourceSpec(id="added-today", url="https://mfa.example/rss"),
                                SourceSpec(id="tass", url="https://tass.example/rss", enabled=False)))
    with TestClient(create_app(config, session_factory)) as client:
        body = client.get("/api/status").json()
    by_id = {s["id"]: s for s in body["sources"]}
    assert list(by_id) == sorted(by_id) and set(by_id) == {"added-today", "interfax", "mid-ru", "tass"}
    added = by_id["added-today"]
    assert (added["enabled"], added["url"], added["last_poll"], added["next_poll"], added["items"]) == (
        True, "https://mfa.example/rss", None, None, 0)
    assert by_id["tass"]["items"] == 2  # known to the database: its row, not the configuration


def test_healthz_and_openapi(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    spec = api.get("/openapi.json").json()
    assert {"/api/items", "/api/items/{item_id}", "/api/stories/{story_id}", "/api/status", "/metrics",
            "/healthz"} <= set(spec["paths"])
    assert "/login" not in spec["paths"]


def test_docs_is_swagger_ui_served_by_this_server(api: TestClient) -> None:
    """/docs works offline and under the CSP: every script is a file of this server."""
    page = api.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/docs/swagger-ui-bundle.js">',
                                                       '<script src="/static/docs.js">']
    bundle = api.get("/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert api.get("/docs/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert '"/openapi.json"' in api.get("/static/docs.js").text
    for path in ["/docs/index.html", "/docs/../app.py", "/docs/redoc.standalone.js", "/docs/%2e%2e/core.py"]:
        assert api.get(path).status_code == 404, path


def test_static_files_and_no_traversal(api: TestClient) -> None:
    assert "text/css" in api.get("/static/style.css").headers["content-type"]
    for path in ["/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/api.py",
                 "/static/"]:
        assert api.get(path).status_code == 404, path


@pytest.fixture
def guarded(session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    load(session_factory, SAMPLE)
    with client_for(session_factory, token="s3cret-token") as client:
        yield client


def test_token_required(guarded: TestClient) -> None:
    for path in ["/api/items", "/api/items/1", "/api/status", "/metrics", "/openapi.json"]:
        response = guarded.get(path)
        assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
        assert response.json() == {"detail": "missing or wrong Bearer token", "parameter": None}
        assert guarded.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert guarded.get(path, headers={"Authorization": "Bearer s3cret-token"}).status_code in (200, 404)
    assert guarded.get("/healthz").status_code == 200
    assert guarded.get("/docs/swagger-ui.css").status_code == 200  # a library's file: no secret
    docs = guarded.get("/docs", follow_redirects=False)
    assert docs.status_code == 303 and docs.headers["location"] == "/login?next=%2Fdocs"


def test_page_login_sets_httponly_cookie(guarded: TestClient) -> None:
    response = guarded.get("/?q=СВМДА", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    bad = guarded.post("/login", content="token=nope&next=/", follow_redirects=False,
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert bad.status_code == 401 and "newsmon_session" not in bad.headers.get("set-cookie", "")
    good = guarded.post("/login", content="token=s3cret-token&next=%2F%3Fq%3D1", follow_redirects=False,
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert good.status_code == 303 and good.headers["location"] == "/?q=1"
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "s3cret-token" not in cookie
    assert guarded.get("/").status_code == 200  # the client keeps the cookie
    assert guarded.get("/api/items").status_code == 200


def test_login_never_redirects_off_site(guarded: TestClient) -> None:
    for target in ["https://evil.example/", "//evil.example/", "/\\evil.example"]:
        response = guarded.post("/login", data={"token": "s3cret-token", "next": target}, follow_redirects=False)
        assert response.headers["location"] == "/"


def test_serve_refuses_public_host_without_token(tmp_path: Any, db_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from scheduler.cli import cli

    config = tmp_path / "newsmon.toml"
    config.write_text("", "utf-8")
    result = CliRunner().invoke(cli, ["--config", str(config), "serve", "--host", "0.0.0.0"],
                                env={"NEWSMON_DATABASE_URL": db_url})
    assert result.exit_code == 2
    assert "api_token" in result.output and "--insecure" in result.output

