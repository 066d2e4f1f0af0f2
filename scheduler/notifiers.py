"""Alert channels: a webhook (httpx, Standard Webhooks headers and signature) and any Apprise
URL, each sending one event or one digest and returning the outcome as a value."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import httpx
from loguru import logger

from crawler.addresses import destination_problem

if TYPE_CHECKING:
    from scheduler.config import AlertSpec
    from storage.outbox import ClaimedEvent

USER_AGENT = "newsmon/0.1 (alerts)"

# Apprise schemes whose URL host is the server Apprise connects to (self-hosted services and
# generic HTTP targets); for cloud services (tgram://, slack://, …) the "host" is a token.
APPRISE_HOST_SCHEMES = frozenset({
    "json", "jsons", "xml", "xmls", "form", "forms", "ntfy", "ntfys", "gotify", "gotifys",
    "mailto", "mailtos", "matrix", "matrixs", "rocket", "rockets", "mmost", "mmosts", "apprise",
    "apprises", "mqtt", "mqtts", "ncloud", "nclouds", "nctalk", "nctalks", "signal", "signals",
    "mastodon", "mastodons", "toot", "toots", "misskey", "misskeys", "hassio", "hassios",
})


@dataclass(frozen=True)
class Delivery:
    """What one send came to: confirmed, or an error to retry after (at least) ``retry_after``."""

    ok: bool
    error: str | None = None
    retry_after: float | None = None


class Channel(Protocol):
    """An alert channel: sends one event or one digest of events."""

    id: str
    spec: AlertSpec

    def send(self, event: ClaimedEvent) -> Delivery: ...

    def send_digest(self, events: Sequence[ClaimedEvent]) -> Delivery: ...

    def close(self) -> None: ...


# --- destination check ---------------------------------------------------------------------------


def apprise_host(url: str) -> str | None:
    """The server an Apprise URL connects to, when its scheme names one."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in APPRISE_HOST_SCHEMES:
        return None
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


# --- message text -------------------------------------------------------------------------------


def _snippet(item: dict[str, Any], organisations: Sequence[str]) -> str:
    for match in item.get("matches") or []:
        if match.get("organisation") in organisations:
            return str(match.get("snippet") or "")
    return ""


def item_page(item: dict[str, Any], site_url: str | None) -> str:
    """The item's page on ``newsmon serve`` (``[server] public_url``), else its own URL."""
    if site_url and item.get("id") is not None:
        return f"{site_url.rstrip('/')}/items/{int(item['id'])}"
    return str(item.get("url") or "")


def _a(url: str) -> str:
    return f'<a href="{html.escape(url)}">{html.escape(url)}</a>'


def event_message(event: ClaimedEvent, site_url: str | None = None) -> tuple[str, str]:
    """Title and HTML body in plain words; everything taken from a feed is HTML-escaped. An
    edit or removal says what changed and links to the item's page (its versions and diff)."""
    body = event.body
    if body.get("event") in ("edit", "removed"):
        return change_message(body, event.organisations, site_url)
    item = body.get("item") or {}
    orgs = ", ".join(event.organisations)
    title = str(item.get("title") or "(no title)")
    link = str(item.get("url") or "")
    lines = [
        f"Organisation: {html.escape(orgs)}",
        f"Title: {html.escape(title)}",
        f"Source: {html.escape(str(item.get('source') or ''))}",
        f"Link: {_a(link)}",
    ]
    if snippet := _snippet(item, event.organisations):
        lines.append(f"Snippet: {html.escape(snippet)}")
    if published := item.get("published_at"):
        lines.append(f"Published: {html.escape(str(published))}")
    return html.escape(f"{orgs}: {title}"), "<br/>\n".join(lines)


def change_message(body: dict[str, Any], organisations: Sequence[str],
                   site_url: str | None) -> tuple[str, str]:
    """An ``edit`` or ``removed`` event in plain words."""
    item = body.get("item") or {}
    changes = body.get("changes") or {}
    title = str(item.get("title") or "(no title)")
    source = str(item.get("source") or "")
    orgs = ", ".join(organisations)
    if body.get("event") == "removed":
        head = f"Removed: {title}"
        lines = [f"{html.escape(source)} took down this item's page (it answers 404/410 or "
                 "redirects to the home page or a listing). newsmon keeps its last text."]
    else:
        head = f"Edited: {title}"
        lines = [f"{html.escape(source)} changed this item after publishing it (version "
                 f"{int(changes.get('from_version') or 0)} → {int(changes.get('to_version') or 0)})."]
        if pair := changes.get("title"):
            lines.append(f"Title changed from «{html.escape(str(pair[0]))}» to «{html.escape(str(pair[1]))}».")
        if diff := changes.get("diff"):
            lines.append("What changed ([-removed-] {+added+}):<br/>\n"
                         + "<br/>\n".join(html.escape(line) for line in str(diff).splitlines()[:10]))
    lines.append(f"Organisation: {html.escape(orgs)}")
    lines.append(f"Item: {_a(item_page(item, site_url))}")
    lines.append(f"Original: {_a(str(item.get('url') or ''))}")
    return html.escape(f"{orgs}: {head}"), "<br/>\n".join(lines)


def digest_message(events: Sequence[ClaimedEvent], site_url: str | None = None) -> tuple[str, str]:
    """One message listing the period's stories, then, in a section of their own, the edits and
    removals of matching items."""
    orgs = sorted({o for e in events for o in e.organisations})
    matches = [e for e in events if e.body.get("event", "match") == "match"]
    changes = [e for e in events if e.body.get("event") in ("edit", "removed")]
    lines = []
    for event in matches:
        item = event.body.get("item") or {}
        link = html.escape(str(item.get("url") or ""))
        lines.append(f"• [{html.escape(', '.join(event.organisations))}] "
                     f"{html.escape(str(item.get('title') or '(no title)'))} — "
                     f"{html.escape(str(item.get('source') or ''))}<br/>\n"
                     f'  <a href="{link}">{link}</a>')
    if changes:
        lines.append("<b>Edits and removals</b>")
        for event in changes:
            item = event.body.get("item") or {}
            what = "removed" if event.body.get("event") == "removed" else "edited"
            lines.append(f"• [{html.escape(', '.join(event.organisations))}] {what}: "
                         f"{html.escape(str(item.get('title') or '(no title)'))} — "
                         f"{html.escape(str(item.get('source') or ''))}<br/>\n"
                         f"  {_a(item_page(item, site_url))}")
    noun = "story" if len(matches) == 1 else "stories"
    summary = f"{len(matches)} {noun}"
    if changes:
        summary += f", {len(changes)} edit{'s' * (len(changes) != 1)} or removal{'s' * (len(changes) != 1)}"
    return (html.escape(f"newsmon digest: {summary} ({', '.join(orgs)})"),
            "<br/>\n".join(lines))


def digest_id(events: Sequence[ClaimedEvent]) -> str:
    """A digest's id: the same for the same events, so a retried digest can be dropped."""
    joined = ",".join(sorted(e.event_id for e in events))
    return "digest-" + hashlib.sha256(joined.encode()).hexdigest()[:32]


# --- webhook ------------------------------------------------------------------------------------


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks signature: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``;
    a ``whsec_`` secret is base64, any other is used as UTF-8 bytes."""
    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


class WebhookChannel:
    """POSTs DESIGN.md's JSON body; a 2xx confirms, anything else is retried."""

    def __init__(self, spec: AlertSpec, client: httpx.Client | None = None) -> None:
        self.spec, self.id = spec, spec.channel_id
        self.client = client or httpx.Client(timeout=spec.timeout, follow_redirects=False,
                                             headers={"User-Agent": USER_AGENT})

    def send(self, event: ClaimedEvent) -> Delivery:
        return self._post(event.event_id, event.payload.encode("utf-8"))

    def send_digest(self, events: Sequence[ClaimedEvent]) -> Delivery:
        msg_id = digest_id(events)
        body = {"event_id": msg_id, "event": "digest", "events": [e.body for e in events]}
        return self._post(msg_id, json.dumps(body, ensure_ascii=False).encode("utf-8"))

    def headers(self, msg_id: str, body: bytes) -> dict[str, str]:
        timestamp = int(time.time())
        headers = {**self.spec.headers, "Content-Type": "application/json",
                   "webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
        if self.spec.secret:
            headers["webhook-signature"] = sign(self.spec.secret, msg_id, timestamp, body)
        return headers

    def _post(self, msg_id: str, body: bytes) -> Delivery:
        if not self.spec.allow_private:
            parts = urlsplit(self.spec.url)
            if problem := destination_problem(parts.hostname, parts.port):
                return Delivery(False, f"blocked: {problem}; set allow_private = true to allow it")
        try:
            response = self.client.post(self.spec.url, content=body, headers=self.headers(msg_id, body))
        except httpx.TimeoutException:
            return Delivery(False, f"timeout after {self.spec.timeout:g}s")
        except httpx.HTTPError as exc:
            return Delivery(False, f"{type(exc).__name__}: {exc}")
        if 200 <= response.status_code < 300:
            return Delivery(True)
        return Delivery(False, f"http {response.status_code}", _retry_after(response))

    def close(self) -> None:
        self.client.close()


# --- apprise ------------------------------------------------------------------------------------


class AppriseChannel:
    """Any Apprise URL; one Apprise object per channel, so a retry never repeats another target."""

    def __init__(self, spec: AlertSpec, site_url: str | None = None) -> None:
        import apprise

        self.spec, self.id, self.site_url = spec, spec.channel_id, site_url
        asset = apprise.AppriseAsset(allow_templates=False, storage_mode="memory",
                                     service_timeout=spec.timeout)
        asset.async_mode = False
        asset.http_redirects = False
        self.apprise = apprise.Apprise(asset=asset)
        self.valid = bool(self.apprise.add(spec.url))
        self.body_format = apprise.NotifyFormat.HTML

    def send(self, event: ClaimedEvent) -> Delivery:
        return self._notify(*event_message(event, self.site_url))

    def send_digest(self, events: Sequence[ClaimedEvent]) -> Delivery:
        return self._notify(*digest_message(events, self.site_url))

    def _notify(self, title: str, body: str) -> Delivery:
        if not self.valid:
            return Delivery(False, "not a usable Apprise URL")
        if not self.spec.allow_private:
            host = apprise_host(self.spec.url)
            if host and (problem := destination_problem(host)):
                return Delivery(False, f"blocked: {problem}; set allow_private = true to allow it")
        result = self.apprise.notify(title=title, body=body, body_format=self.body_format)
        return Delivery(True) if result else Delivery(False, "apprise: the notification was not sent")

    def close(self) -> None:
        self.apprise.clear()


# --- log ----------------------------------------------------------------------------------------


def log_line(event: ClaimedEvent) -> str:
    """``match CICA: <title> <url>`` (``edit``/``removed`` for those events); one line whatever
    the feed put in the title."""
    item = event.body.get("item") or {}
    title = " ".join(str(item.get("title") or "(no title)").split())
    kind = str(event.body.get("event") or "match")
    return f"{kind} {', '.join(event.organisations)}: {title} {item.get('url') or ''}".rstrip()


class LogChannel:
    """Prints each event as one INFO line in the daemon's log: always delivered."""

    def __init__(self, spec: AlertSpec) -> None:
        self.spec, self.id = spec, spec.channel_id

    def send(self, event: ClaimedEvent) -> Delivery:
        logger.bind(event_id=event.event_id, channel=self.id).info("{}", log_line(event))
        return Delivery(True)

    def send_digest(self, events: Sequence[ClaimedEvent]) -> Delivery:
        noun = "story" if len(events) == 1 else "stories"
        logger.bind(channel=self.id).info("digest: {} {}", len(events), noun)
        for event in events:
            self.send(event)
        return Delivery(True)

    def close(self) -> None:
        pass


def build_channel(spec: AlertSpec, site_url: str | None = None) -> Channel:
    """:param site_url: where ``newsmon serve`` is reached, for links to item pages."""
    if spec.kind == "webhook":
        return WebhookChannel(spec)
    if spec.kind == "log":
        return LogChannel(spec)
    return AppriseChannel(spec, site_url)
