"""From a URL a user typed to a source: feed discovery (``<link rel="alternate">`` through
trafilatura.feeds, common feed paths, robots.txt sitemaps, t.me channels), ranking of the
candidates, an inferred ``html`` source when the page has no feed, and the guessed id,
language and time zone. Fetching goes through :mod:`crawler.fetching` (the crawler's rules)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Required, TypedDict
from urllib.parse import urljoin, urlsplit

from crawler.encoding import decode_body
from crawler.fetching import FetchRequest, fetch
from crawler.inference import infer_selectors
from crawler.items import Entry, ParseResult
from crawler.languages import normalise_language, text_language
from crawler.sources import SOURCE_ID, CrawlSettings, SourceSpec
from crawler.spiders.kinds import parse_document

if TYPE_CHECKING:
    from collections.abc import Iterable

    from crawler.fetching import Fetched

COMMON_FEED_PATHS = ("/rss", "/feed", "/rss.xml", "/atom.xml", "/rss.php", "/feed/")
MAX_LINKED_FEEDS = 8
MAX_SITEMAPS = 3
_TELEGRAM = re.compile(r"https?://(?:www\.)?(?:t\.me|telegram\.me)/(?:s/)?([A-Za-z][A-Za-z0-9_]{3,31})(?=[/?\"'#\s<]|$)")
_TELEGRAM_NOT_CHANNELS = frozenset({"share", "joinchat", "addstickers", "proxy", "iv", "login", "s"})
_TITLE = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_HTML_LANG = re.compile(r"<html[^>]*\blang\s*=\s*[\"']?([A-Za-z]{2,3})", re.IGNORECASE)
# The time zone of a country's sites (capital's zone), by top-level domain.
TIMEZONES = {
    "ru": "Europe/Moscow", "az": "Asia/Baku", "kz": "Asia/Almaty", "uz": "Asia/Tashkent",
    "kg": "Asia/Bishkek", "tj": "Asia/Dushanbe", "tm": "Asia/Ashgabat", "by": "Europe/Minsk",
    "am": "Asia/Yerevan", "ge": "Asia/Tbilisi", "ua": "Europe/Kyiv", "tr": "Europe/Istanbul",
    "cn": "Asia/Shanghai", "mn": "Asia/Ulaanbaatar", "ir": "Asia/Tehran", "in": "Asia/Kolkata",
    "pk": "Asia/Karachi", "af": "Asia/Kabul", "th": "Asia/Bangkok", "vn": "Asia/Ho_Chi_Minh",
    "kr": "Asia/Seoul", "jp": "Asia/Tokyo", "qa": "Asia/Qatar", "ae": "Asia/Dubai",
    "eg": "Africa/Cairo", "il": "Asia/Jerusalem", "iq": "Asia/Baghdad", "jo": "Asia/Amman",
    "ps": "Asia/Gaza", "bh": "Asia/Bahrain", "kh": "Asia/Phnom_Penh", "lk": "Asia/Colombo",
    "bd": "Asia/Dhaka", "de": "Europe/Berlin", "fr": "Europe/Paris", "uk": "Europe/London",
}


class SourceBase(TypedDict, total=False):
    """What every candidate of one discovery shares (the id is a placeholder until named)."""

    id: Required[str]
    allow_private: bool


@dataclass
class Candidate:
    """A source the URL could become, with what reading it gave."""

    spec: SourceSpec
    # "link rel=alternate", "common path", "robots.txt sitemap", "t.me link", "inferred selectors",
    # "the URL itself"
    how: str
    entries: list[Entry] = field(default_factory=list)
    same_site: float = 0.0  # share of entries on the page's site
    newest: datetime | None = None
    language_match: bool = False

    def rank(self) -> tuple[object, ...]:
        kinds = {"feed": 3, "html": 2, "sitemap": 1, "telegram": 0}
        newest = self.newest.timestamp() if self.newest else 0.0
        on_site = self.same_site >= 0.5 or self.spec.kind == "telegram"
        return (on_site, kinds.get(self.spec.kind, 0), round(self.same_site, 1), self.language_match,
                newest, len(self.entries))


@dataclass
class Discovery:
    """What ``discover`` found: candidates best first, or why there are none."""

    url: str
    candidates: list[Candidate] = field(default_factory=list)
    blocked: str | None = None
    error: str | None = None
    language: str | None = None
    title: str = ""  # the page's <title>, for the source's name

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


# --- pure parts -------------------------------------------------------------------------------


def feed_links(html: str, url: str) -> list[str]:
    """Feed URLs the page announces (``<link rel="alternate">`` of RSS/Atom/JSON Feed, else
    links that look like feeds), resolved; through trafilatura.feeds."""
    from trafilatura.feeds import FeedParameters, determine_feed

    host = urlsplit(url).hostname or ""
    params = FeedParameters(url, host, url)
    return list(dict.fromkeys(determine_feed(html, params)))[:MAX_LINKED_FEEDS]


def common_feed_urls(url: str) -> list[str]:
    """The site's usual feed paths, each once."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return [origin + path for path in COMMON_FEED_PATHS]


def robots_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/robots.txt"


def robots_sitemaps(text: str, base: str) -> list[str]:
    """``Sitemap:`` lines of a robots.txt."""
    found = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "sitemap" and value.strip():
            found.append(urljoin(base, value.strip()))
    return list(dict.fromkeys(found))


def telegram_channels(html: str) -> list[str]:
    """Public channel names of the page's t.me links."""
    names = [m.group(1) for m in _TELEGRAM.finditer(html)]
    return [n for n in dict.fromkeys(names) if n.lower() not in _TELEGRAM_NOT_CHANNELS]


def page_language(html: str, entries: Iterable[Entry] = ()) -> str | None:
    """``<html lang>``, else the language of the entries' titles."""
    if m := _HTML_LANG.search(html[:20000]):
        return normalise_language(m.group(1))
    titles = " ".join(e.title for e in entries)
    return text_language(titles) if titles.strip() else None


def page_title(html: str) -> str:
    """The page's ``<title>``, as plain text."""
    from html import unescape

    m = _TITLE.search(html[:100_000])
    return " ".join(unescape(m.group(1)).split())[:200] if m else ""


def guess_timezone(url: str) -> str:
    """The time zone of the site's country (by top-level domain), else UTC."""
    host = urlsplit(url).hostname or ""
    return TIMEZONES.get(host.rsplit(".", 1)[-1].lower(), "UTC")


def source_id_for(url: str, taken: Iterable[str] = ()) -> str:
    """``https://www.mfa.gov.az/en/news`` → ``mfa-gov-az-en-news``, made unique against ``taken``."""
    parts = urlsplit(url)
    host = (parts.hostname or "source").removeprefix("www.")
    words = [host, *[s for s in parts.path.split("/") if s][:2]]
    return unique_id(slug("-".join(words)), taken)


_CYRILLIC = dict(zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюяәғқңөұүһі",
                     ["a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "i", "k", "l", "m", "n", "o",
                      "p", "r", "s", "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "", "y", "", "e",
                      "iu", "ia", "a", "g", "q", "n", "o", "u", "u", "h", "i"], strict=True))


def slug(text: str) -> str:
    """A source id from any text: lower-case ASCII letters, digits and - (Cyrillic
    transliterated)."""
    from unicodedata import normalize

    latin = "".join(_CYRILLIC.get(ch, ch) for ch in text.lower())
    ascii_text = normalize("NFKD", latin).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")[:48].strip("-")
    return cleaned or "source"


def unique_id(base: str, taken: Iterable[str]) -> str:
    taken = set(taken)
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def _same_site(url: str, other: str) -> bool:
    def site(u: str) -> str:
        return (urlsplit(u).hostname or "").removeprefix("www.")

    return site(url) == site(other) or site(url).endswith("." + site(other)) or \
        site(other).endswith("." + site(url))


def candidate(spec: SourceSpec, how: str, result: ParseResult, page_url: str, language: str | None) -> Candidate:
    entries = result.entries
    dates = [e.published_at for e in entries if e.published_at]
    same = sum(1 for e in entries if _same_site(e.url, page_url)) / len(entries) if entries else 0.0
    langs = {normalise_language(e.language) for e in entries if e.language} | (
        {spec.language} if spec.language else set())
    return Candidate(spec=spec, how=how, entries=entries, same_site=same,
                     newest=max(dates) if dates else None,
                     language_match=bool(language) and language in langs)


def rank(candidates: list[Candidate]) -> list[Candidate]:
    """Best first: items on the page's own site; then a feed before a listing before a
    sitemap before a channel; then in the page's language, newest."""
    return sorted(candidates, key=Candidate.rank, reverse=True)


# --- discovery --------------------------------------------------------------------------------


def discover(url: str, *, crawl: CrawlSettings, taken: Iterable[str] = (), allow_private: bool = False,
             language: str | None = None) -> Discovery:
    """Fetch ``url`` and its site's feed candidates; every candidate that reads as a source.

    :param taken: source ids already configured (the proposed ids avoid them).
    :param allow_private: the user typed ``url``: its host may be on a private address.
    :param language: the user's choice; else the page's.
    """
    private = url if allow_private else None
    page, robots = fetch([FetchRequest(url=url, expect="html"),
                          FetchRequest(url=robots_url(url), expect="robots", obey_robots=False)],
                         crawl=crawl, private_host_url=private)
    found = Discovery(url=url)
    if page.blocked:
        found.blocked = page.blocked
        return found
    if not page.ok:
        found.error = page.message or f"HTTP {page.status}"
        return found
    base = SourceBase(id="x", allow_private=allow_private)
    itself = _as_feed(page, url, language, base)
    if itself is not None:  # the URL is a feed
        found.language = language or itself.spec.language
        found.candidates = [_named(itself, taken)]
        return found
    html = decode_body(page.body, content_type=page.content_type)
    found.language = language or page_language(html)
    found.title = page_title(html)
    page_url = page.final_url or url
    feeds = list(dict.fromkeys([*feed_links(html, page_url), *common_feed_urls(page_url)]))
    sitemaps = robots_sitemaps(robots.body.decode("utf-8", "replace"), page_url) if robots.ok else []
    requests = [FetchRequest(url=u, expect="feed") for u in feeds]
    requests += [FetchRequest(url=u, expect="sitemap") for u in sitemaps[:MAX_SITEMAPS]]
    candidates = []
    for fetched in fetch(requests, crawl=crawl, private_host_url=private):
        expect = "sitemap" if fetched.url in sitemaps else "feed"
        how = ("robots.txt sitemap" if expect == "sitemap" else
               "link rel=alternate" if fetched.url not in common_feed_urls(page_url) else "common path")
        made = _read(fetched, expect, how, page_url, found.language, base)
        if made is not None:
            candidates.append(made)
    inferred = _inferred(html, page_url, found.language, base)
    if inferred is not None:
        candidates.append(inferred)
    for name in telegram_channels(html):
        spec = SourceSpec(**base, kind="telegram", url=f"https://t.me/s/{name}", language=found.language,
                          fetch_articles=False)
        candidates.append(Candidate(spec=spec, how="t.me link"))
    unique = {c.spec.url: c for c in candidates}
    found.candidates = [_named(c, taken) for c in rank(list(unique.values()))]
    return found


def _spec(base: SourceBase, kind: str, url: str, language: str | None, **extra: object) -> SourceSpec:
    return SourceSpec.model_validate({**base, "kind": kind, "url": url, "language": language,
                                      "timezone": guess_timezone(url), **extra})


def _as_feed(page: Fetched, url: str, language: str | None, base: SourceBase) -> Candidate | None:
    spec = _spec(base, "feed", page.final_url or url, language)
    result = parse_document(spec, page.body, url=spec.url, content_type=page.content_type)
    if result.error or not result.entries:
        return None
    lang = language or next((normalise_language(e.language) for e in result.entries if e.language), None)
    spec = spec.model_copy(update={"language": lang})
    return candidate(spec, "the URL itself", result, url, lang)


def _read(fetched: Fetched, kind: str, how: str, page_url: str, language: str | None,
          base: SourceBase) -> Candidate | None:
    if not fetched.ok:
        return None
    spec = _spec(base, kind, fetched.final_url or fetched.url, language)
    result = parse_document(spec, fetched.body, url=spec.url, content_type=fetched.content_type)
    if result.error or not (result.entries or result.follow):
        return None
    return candidate(spec, how, result, page_url, language)


def infer_source(html: str, page_url: str, *, base: SourceBase,
                 language: str | None = None) -> SourceSpec | None:
    """An ``html`` source for a listing page without a feed (crawler.inference), with the
    time zone of the site's country; None when the page has no list of articles."""
    language = language or page_language(html)
    selectors = infer_selectors(html, url=page_url, languages=[language] if language else None)
    if selectors is None:
        return None
    return _spec(base, "html", page_url, language, selectors=selectors)


def _inferred(html: str, page_url: str, language: str | None, base: SourceBase) -> Candidate | None:
    spec = infer_source(html, page_url, base=base, language=language)
    if spec is None:
        return None
    result = parse_document(spec, html.encode("utf-8"), url=page_url, content_type="text/html; charset=utf-8")
    if result.error:
        return None
    return candidate(spec, "inferred selectors", result, page_url, language)


def _named(found: Candidate, taken: Iterable[str]) -> Candidate:
    """The candidate with its id (from the host and path) and a name."""
    source_id = source_id_for(found.spec.url if found.spec.kind != "telegram" else
                              "https://t.me/" + found.spec.url.rstrip("/").rsplit("/", 1)[-1], taken)
    assert SOURCE_ID.match(source_id)
    found.spec = found.spec.model_copy(update={"id": source_id})
    return found
