"""The HTML of the page, the item view and the login form; every feed-derived value is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scheduler.web.html import e, highlight, link, query_string, word_diff
from scheduler.web.params import Search

CHART_WIDTH, CHART_HEIGHT = 600, 60


def layout(title: str, body: str, *, logout: bool = False) -> str:
    nav = '<form method="post" action="/logout" class="logout"><button>Log out</button></form>' if logout else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{e(title)} · newsmon</title>
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script>
</head><body>
<header><a href="/" class="brand">newsmon</a>{nav}</header>
<main>{body}</main>
</body></html>"""


def when(value: str | None) -> str:
    return (value or "")[:16].replace("T", " ") + (" UTC" if value else "")


def _options(name: str, label: str, choices: Sequence[str], chosen: Sequence[str]) -> str:
    opts = "".join(f'<option value="{e(c)}"{" selected" if c in chosen else ""}>{e(c)}</option>'
                   for c in choices)
    return (f'<label>{e(label)}<select name="{e(name)}" id="f-{e(name)}" multiple size="3">'
            f"{opts}</select></label>")


def search_form(search: Search, orgs: Sequence[str], sources: Sequence[str], show_all: bool) -> str:
    orgs = sorted(set(orgs) | set(search.orgs))
    sources = sorted(set(sources) | set(search.sources))
    checked = " checked" if show_all else ""
    return f"""<form method="get" action="/" class="search" role="search">
<input type="search" name="q" id="q" value="{e(search.q)}" autofocus
 placeholder="Search: words, &quot;a phrase&quot;, OR, -word">
{_options("org", "Organisation", orgs, search.orgs)}
{_options("source", "Source", sources, search.sources)}
<label>Since<input type="date" name="since" value="{e(search.since[:10])}"></label>
<label>Until<input type="date" name="until" value="{e(search.until[:10])}"></label>
<label class="check"><input type="checkbox" name="all" value="1"{checked}> unmatched items too</label>
<label>Edited in the last<select name="edited">{_edited_options(search.edited)}</select></label>
<button type="submit" id="go">Search</button> <a href="/">reset</a> · <a href="/?edited=7">recently edited</a>
</form>"""


EDITED_CHOICES = ("1", "3", "7", "30")


def _edited_options(chosen: str) -> str:
    """The "recently edited" view: items with a new version (an edit, a removal) in N days."""
    choices = [("", "any time (all items)")] + [(d, f"{d} day{'' if d == '1' else 's'}") for d in EDITED_CHOICES]
    if chosen and chosen not in EDITED_CHOICES:
        choices.append((chosen, f"{chosen} days"))
    return "".join(f'<option value="{e(v)}"{" selected" if v == chosen else ""}>{e(label)}</option>'
                   for v, label in choices)


def result(item: dict[str, Any]) -> str:
    orgs = "".join(f'<span class="org">{e(o)}</span>' for o in item["organisations"])
    snippets = "".join(
        f'<li><span class="org">{e(m["organisation"])}</span> {highlight(m["snippet"], [m["form"]])}</li>'
        for m in item["matches"][:3])
    state = ' <span class="removed">removed</span>' if item.get("removed") else ""
    edited = f' <span class="edited">version {int(item["version"])}</span>' if item.get("version", 1) > 1 else ""
    return f"""<li class="result">
<a class="title" href="/items/{int(item["id"])}">{e(item["title"] or "(untitled)")}</a>{state}{edited}
<div class="meta"><span class="source">{e(item["source"])}</span>
<time>{e(when(item["published_at"] or item["first_seen_at"]))}</time> {orgs}</div>
<ul class="snippets">{snippets}</ul></li>"""


def results(items: list[dict[str, Any]], search: Search, next_cursor: str | None, show_all: bool) -> str:
    if not items:
        return '<p class="empty">No items found.</p>'
    more = ""
    if next_cursor:
        params = {"q": search.q, "org": search.orgs, "source": search.sources, "since": search.since,
                  "until": search.until, "all": "1" if show_all else "", "edited": search.edited,
                  "cursor": next_cursor}
        more = f'<p><a class="older" href="/?{e(query_string(params))}">Older items →</a></p>'
    return f'<ol class="results">{"".join(result(i) for i in items)}</ol>{more}'


def chart(counts: dict[str, dict[str, int]], days: list[str]) -> str:
    """One row of inline SVG bars per organisation: mentions per day."""
    if not counts or not days:
        return '<p class="empty">No mentions in this period.</p>'
    top = max(n for per_day in counts.values() for n in per_day.values()) or 1
    width = CHART_WIDTH / len(days)
    rows = []
    for org in sorted(counts, key=lambda o: -sum(counts[o].values())):
        bars = []
        for i, day in enumerate(days):
            n = counts[org].get(day, 0)
            if not n:
                continue
            h = max(2.0, CHART_HEIGHT * n / top)
            bars.append(f'<rect x="{i * width:.2f}" y="{CHART_HEIGHT - h:.2f}" width="{max(width - 1, 1):.2f}" '
                        f'height="{h:.2f}"><title>{e(org)} {e(day)}: {n}</title></rect>')
        total = sum(counts[org].values())
        rows.append(f'<div class="chart-row"><span class="org">{e(org)}</span> <span class="total">{total}</span>'
                    f'<svg class="bars" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" width="{CHART_WIDTH}" '
                    f'height="{CHART_HEIGHT}" role="img" aria-label="{e(org)} mentions per day">'
                    f'{"".join(bars)}</svg></div>')
    return (f'<p class="range">{e(days[0])} — {e(days[-1])}, items per day</p>' + "".join(rows))


def health(sources: list[dict[str, Any]]) -> str:
    if not sources:
        return '<p class="empty">No sources yet.</p>'
    rows = []
    for s in sources:
        err = s["last_error"]
        state = "error" if err else "silent" if s["silent"] else "off" if not s["enabled"] else "ok"
        error = f'{e(err["class"])}: {e(err["message"])}' if err else ""
        rows.append(f'<tr class="{state}"><td>{e(s["id"])}</td><td>{e(state)}</td><td>{e(when(s["last_poll"]))}</td>'
                    f'<td>{e(when(s["last_success"]))}</td><td>{e(when(s["last_new_item"]))}</td>'
                    f'<td>{int(s["items"])}</td><td>{int(s["failures"])}</td><td>{error}</td></tr>')
    return ('<table class="health"><thead><tr><th>source</th><th>state</th><th>last poll</th>'
            '<th>last success</th><th>last new item</th><th>items</th><th>failures</th><th>last error</th>'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def index_page(ctx: dict[str, Any]) -> str:
    error = f'<p class="error" role="alert">{e(ctx["error"])}</p>' if ctx.get("error") else ""
    body = f"""<section class="find">{search_form(ctx["search"], ctx["orgs"], ctx["sources"], ctx["show_all"])}
{error}</section>
<div class="columns"><section class="list"><h2>{e(ctx["heading"])}</h2>
{results(ctx["items"], ctx["search"], ctx["next_cursor"], ctx["show_all"])}</section>
<aside><h2>Mentions per day</h2>{chart(ctx["counts"], ctx["days"])}</aside></div>
<section><h2>Source health</h2>{health(ctx["health"])}</section>"""
    return layout(ctx["search"].q or "Matches", body, logout=ctx.get("logout", False))


def _paragraphs(text: str) -> str:
    parts = [p for p in text.split("\n") if p.strip()]
    return "".join(f"<p>{e(p)}</p>" for p in parts) or '<p class="empty">(no text)</p>'


def _versions(versions: list[dict[str, Any]]) -> str:
    out, previous = [], None
    for v in versions:
        head = f'version {int(v["version"])} · fetched {e(when(v["fetched_at"]))} · <code>{e(v["content_hash"])}</code>'
        if v.get("removed"):
            head += ' · <strong class="removed">removed: the page was gone (the text is the last one seen)</strong>'
        if previous is None:
            diff = f'<div class="diff"><strong>{e(v["title"])}</strong>\n{e(v["text"])}</div>'
        else:
            diff = (f'<div class="diff"><strong>{word_diff(previous["title"], v["title"])}</strong>\n'
                    f'{word_diff(previous["text"], v["text"])}</div>')
        out.append(f'<details class="version" id="v{int(v["version"])}"><summary>{head}</summary>{diff}</details>')
        previous = v
    return "".join(out) or '<p class="empty">No stored versions.</p>'


def _removed_notice(item: dict[str, Any]) -> str:
    if not item.get("removed"):
        return ""
    gone = next((v for v in reversed(item.get("versions", [])) if v.get("removed")), None)
    since = f" since {e(when(gone['fetched_at']))}" if gone else ""
    return (f'<p class="removed" role="status">Removed: the page is gone{since} '
            "(it answered 404/410 or redirected to the home page or a listing). "
            "The text below is the last one seen.</p>")


def item_page(item: dict[str, Any], logout: bool = False) -> str:
    forms = [m["form"] for m in item["matches"]]
    matches = "".join(f'<li><span class="org">{e(m["organisation"])}</span> <em>{e(m["form"])}</em> '
                      f'({e(m["alias"])}): {highlight(m["snippet"], [m["form"]])}</li>' for m in item["matches"])
    siblings = "".join(
        f'<li><a href="/items/{int(s["id"])}">{e(s["title"] or "(untitled)")}</a> '
        f'<span class="source">{e(s["source"])}</span> <time>{e(when(s["published_at"]))}</time></li>'
        for s in item.get("story", []) if s["id"] != item["id"])
    body = f"""<article class="item">
<h1>{highlight(item["title"] or "(untitled)", forms)}</h1>{_removed_notice(item)}
<div class="meta"><span class="source">{e(item["source"])}</span>
published <time>{e(when(item["published_at"]))}</time> · first seen <time>{e(when(item["first_seen_at"]))}</time>
· version {int(item["version"])} · {link(item["url"], "original")}</div>
<h2>Matches</h2><ul class="matches">{matches or '<li class="empty">none</li>'}</ul>
<h2>Text</h2><div class="text">{_paragraphs(item.get("text") or "")}</div>
<h2>Versions</h2><div class="versions">{_versions(item.get("versions", []))}</div>
<h2>Same story</h2><ul class="story">{siblings or '<li class="empty">no other sources</li>'}</ul>
</article>"""
    return layout(item["title"] or f"item {item['id']}", body, logout=logout)


def login_page(next_path: str, failed: bool) -> str:
    error = '<p class="error" role="alert">Wrong token.</p>' if failed else ""
    body = f"""<form method="post" action="/login" class="login"><h1>Log in</h1>{error}
<input type="hidden" name="next" value="{e(next_path)}">
<label>API token<input type="password" name="token" id="token" autocomplete="current-password" autofocus></label>
<button type="submit">Log in</button></form>"""
    return layout("Log in", body)


def error_page(status: int, message: str) -> str:
    return layout(f"{status}", f'<h1>{status}</h1><p class="error">{e(message)}</p><p><a href="/">back</a></p>')
