"""Alert channels against a real receiver on 127.0.0.1: webhook headers, body and signature,
failures and timeouts, Apprise messages, digests, and refusing private destinations."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid

import pytest

from crawler.addresses import address_problem, destination_problem
from scheduler.config import AlertSpec
from scheduler.notifiers import (
    AppriseChannel,
    WebhookChannel,
    apprise_host,
    build_channel,
    digest_id,
    sign,
)
from storage.outbox import ClaimedEvent
from tests.plugins.receivers import Receiver

# apprise's PGP helper imports the stdlib's imghdr (deprecated) when its plugins load.
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

ITEM = {"id": 7, "source": "mid-ru", "url": "https://mid.example/news/1?a=1&b=2",
        "canonical_url": "https://mid.example/news/1", "title": "СВМДА <script>alert(1)</script>",
        "published_at": "2026-03-01T09:30:00+00:00", "first_seen_at": "2026-03-01T09:31:00+00:00",
        "language": "ru", "organisations": ["CICA"],
        "matches": [{"organisation": "CICA", "alias": "СВМДА", "form": "СВМДА",
                     "snippet": "встреча <b>СВМДА</b> & партнёров"}],
        "story_id": 3, "version": 1, "content_hash": "sha256:00"}


def make_event(item: dict[str, object] | None = None) -> ClaimedEvent:
    event_id = str(uuid.uuid4())
    body = {"event_id": event_id, "event": "match", "organisations": ["CICA"], "item": item or ITEM}
    return ClaimedEvent(id=1, event_id=event_id, channel="hook", organisations=["CICA"],
                        payload=json.dumps(body, ensure_ascii=False), attempts=0)


def webhook(receiver: Receiver, **kw: object) -> WebhookChannel:
    spec = AlertSpec.model_validate({"kind": "webhook", "url": f"{receiver.url}/hook",
                                     "allow_private": True, **kw})
    channel = build_channel(spec)
    assert isinstance(channel, WebhookChannel)
    return channel


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """A receiver's check, written from the Standard Webhooks spec rather than our sign()."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(sig.removeprefix("v1,"), expected)
               for sig in headers["webhook-signature"].split())


def test_webhook_posts_the_stored_body_with_its_event_id(receiver: Receiver) -> None:
    channel = webhook(receiver, headers={"X-Desk": "asia"})
    event = make_event()
    assert channel.send(event).ok
    (got,) = receiver.ok()
    assert got.path == "/hook"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == event.event_id
    assert got.headers["webhook-timestamp"].isdigit()
    assert got.headers["x-desk"] == "asia"
    assert "webhook-signature" not in got.headers
    assert got.body == event.payload.encode()
    assert got.json == {"event_id": event.event_id, "event": "match", "organisations": ["CICA"],
                        "item": ITEM}
    channel.close()


def test_webhook_signature_verifies(receiver: Receiver) -> None:
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    channel = webhook(receiver, secret=secret)
    assert channel.send(make_event()).ok
    (got,) = receiver.ok()
    assert verify(secret, got.headers, got.body)
    assert not verify(secret, {**got.headers, "webhook-id": "other"}, got.body)
    # a plain (non-whsec_) secret is used as its UTF-8 bytes
    assert sign("s3cret", "id", 1, b"{}") == "v1," + base64.b64encode(
        hmac.new(b"s3cret", b"id.1.{}", hashlib.sha256).digest()).decode()


def test_webhook_500_is_a_failure_with_retry_after(receiver: Receiver) -> None:
    channel = webhook(receiver)
    receiver.fail(503, times=1, retry_after="42")
    event = make_event()
    first = channel.send(event)
    assert not first.ok and first.error == "http 503" and first.retry_after == 42
    assert channel.send(event).ok
    assert [r.headers["webhook-id"] for r in receiver.requests] == [event.event_id] * 2


def test_webhook_timeout_is_a_failure(receiver: Receiver) -> None:
    channel = webhook(receiver, timeout="0.3s")
    receiver.delay = 1.0
    result = channel.send(make_event())
    assert not result.ok and result.error is not None and result.error.startswith("timeout")


def test_webhook_connection_refused_is_a_failure() -> None:
    spec = AlertSpec(kind="webhook", url="http://127.0.0.1:9/hook", allow_private=True)
    result = WebhookChannel(spec).send(make_event())
    assert not result.ok and "ConnectError" in (result.error or "")


def test_private_alert_targets_are_refused(receiver: Receiver) -> None:
    spec = AlertSpec(kind="webhook", url=f"{receiver.url}/hook", allow_private=False)
    result = WebhookChannel(spec).send(make_event())
    assert not result.ok and "blocked" in (result.error or "") and "127.0.0.1" in (result.error or "")
    apprise_spec = AlertSpec(kind="apprise", url=f"json://127.0.0.1:{receiver.port}/notify", allow_private=False)
    assert "blocked" in (AppriseChannel(apprise_spec).send(make_event()).error or "")
    assert receiver.requests == []


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.20.0.1", "192.168.1.1",
                                     "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1",
                                     "::ffff:127.0.0.1", "fd00::1", "fe80::1%eth0", "224.0.0.1"])
def test_address_problem_refuses_non_public(address: str) -> None:
    assert address_problem(address)


def test_public_addresses_and_hosts() -> None:
    assert address_problem("93.184.216.34") is None
    assert address_problem("2606:4700::1111") is None
    assert destination_problem("localhost")
    assert destination_problem("host.invalid") is None  # does not resolve: fails when sent
    assert apprise_host("json://10.0.0.5:8000/x") == "10.0.0.5"
    assert apprise_host("tgram://123456789:abcdef/12345") is None


def test_apprise_json_to_the_receiver_is_escaped_plain_words(receiver: Receiver) -> None:
    spec = AlertSpec(kind="apprise", url=f"json://127.0.0.1:{receiver.port}/notify",
                     allow_private=True)
    channel = AppriseChannel(spec)
    assert channel.send(make_event()).ok
    (got,) = receiver.ok("/notify")
    message = got.json
    assert message["title"].startswith("CICA: СВМДА &lt;script&gt;")
    body = message["message"]
    assert "<script>" not in body and "&lt;script&gt;" in body
    assert "Organisation: CICA" in body and "Source: mid-ru" in body
    assert 'href="https://mid.example/news/1?a=1&amp;b=2"' in body
    assert "Snippet: встреча &lt;b&gt;СВМДА&lt;/b&gt; &amp; партнёров" in body


def test_apprise_failure_is_reported(receiver: Receiver) -> None:
    spec = AlertSpec(kind="apprise", url=f"json://127.0.0.1:{receiver.port}/notify",
                     allow_private=True)
    receiver.fail(500, times=1)
    assert not AppriseChannel(spec).send(make_event()).ok


def test_digests_list_every_story(receiver: Receiver) -> None:
    events = [make_event({**ITEM, "title": f"story {i}"}) for i in range(3)]
    hook = webhook(receiver)
    assert hook.send_digest(events).ok
    spec = AlertSpec(kind="apprise", url=f"json://127.0.0.1:{receiver.port}/digest",
                     allow_private=True, mode="digest", schedule="0 9 * * *")
    assert AppriseChannel(spec).send_digest(events).ok
    (posted,) = receiver.ok("/hook")
    assert posted.json["event"] == "digest" and posted.json["event_id"] == digest_id(events)
    assert [e["event_id"] for e in posted.json["events"]] == [e.event_id for e in events]
    assert digest_id(list(reversed(events))) == digest_id(events)
    (message,) = receiver.ok("/digest")
    assert message.json["title"] == "newsmon digest: 3 stories (CICA)"
    assert all(f"story {i}" in message.json["message"] for i in range(3))


def test_operator_chosen_loopback_webhook_works_by_default(receiver: Receiver) -> None:
    """DESIGN.md's own example is a webhook on 127.0.0.1 with no allow_private key."""
    spec = AlertSpec(kind="webhook", url=f"{receiver.url}/hook")
    assert WebhookChannel(spec).send(make_event()).ok
    assert len(receiver.requests) == 1


def test_log_channel_prints_one_line_per_match(monkeypatch) -> None:
    from loguru import logger

    from scheduler.notifiers import LogChannel

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m).rstrip("\n")), format="{level} {message}", level="INFO")
    try:
        channel = build_channel(AlertSpec(kind="log"))
        assert isinstance(channel, LogChannel) and channel.id == "log"
        multiline = {**ITEM, "title": "СВМДА\n  meets   today"}
        assert channel.send(make_event(multiline)).ok
        assert channel.send_digest([make_event(), make_event()]).ok
    finally:
        logger.remove(sink)
    assert lines[0] == "INFO match CICA: СВМДА meets today https://mid.example/news/1?a=1&b=2"
    assert lines[1:] == ["INFO digest: 2 stories", *[f"INFO match CICA: {ITEM['title']} {ITEM['url']}"] * 2]
