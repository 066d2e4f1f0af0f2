"""What to watch and how to fetch it: source definitions and crawl settings, validated."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from crawler.units import Duration, Size

RENDERED_KINDS = frozenset({"html", "telegram"})  # kinds whose documents are HTML pages
SOURCE_ID = re.compile(r"^[a-z0-9-]+$")
SourceKind = Literal["feed", "html", "sitemap", "telegram", "json"]


class Frozen(BaseModel):
    """Immutable, strict configuration object: unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def check_http_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.strip()


def _ascending(value: tuple[float, ...]) -> tuple[float, ...]:
    if len(value) > MAX_REVISITS:
        raise ValueError(f"at most {MAX_REVISITS} revisits")
    return tuple(sorted(set(value)))


MAX_REVISITS = 20
Revisits = Annotated[tuple[Duration, ...], AfterValidator(_ascending)]


class CrawlSettings(Frozen):
    """The ``[crawl]`` table: defaults every source inherits."""

    user_agent: str = "newsmon/0.1 (+https://example.org/newsmon)"
    interval: Duration = 600.0
    timeout: Duration = 30.0
    max_response_size: Size = 10_000_000
    obey_robots: bool = True
    fetch_articles: bool = True
    concurrency_per_host: int = Field(default=2, ge=1, le=16)
    max_backoff: Duration = 6 * 3600.0
    jitter: float = Field(default=0.1, ge=0, le=0.5)
    # Crawl processes per round (0: one per CPU core, at most MAX_PROCESSES); a round is split
    # only when each process gets at least MIN_SOURCES_PER_PROCESS sources.
    processes: int = Field(default=0, ge=0, le=16)
    # Article pages are fetched again this long after an item was first seen, to find silent
    # edits and removals ([] turns revisits off).
    revisit: Revisits = (3600.0, 6 * 3600.0, 86400.0, 3 * 86400.0)


class Selectors(Frozen):
    """CSS selectors of an ``html`` source's listing page (Scrapy/parsel syntax)."""

    item: str
    link: str = "a::attr(href)"
    title: str = "a::text"
    date: str | None = None
    summary: str | None = None
    next: str | None = None


class JsonFields(Frozen):
    """Dotted paths into a ``json`` source's document."""

    items: str = ""
    link: str | None = None
    link_template: str | None = None
    title: str = "title"
    date: str | None = None
    body: str | None = None
    id: str = "id"

    @model_validator(mode="after")
    def _link_or_template(self) -> JsonFields:
        if not self.link and not self.link_template:
            raise ValueError("needs `link` or `link_template`")
        return self


class SourceSpec(Frozen):
    """One ``[[sources]]`` entry."""

    id: str
    url: str
    kind: SourceKind = "feed"
    name: str = ""
    language: str | None = None
    interval: Duration | None = None
    enabled: bool = True
    selectors: Selectors | None = None
    fields: JsonFields | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    encoding: str | None = None
    date_format: str | None = None
    fetch_articles: bool | None = None
    article_selector: str | None = None
    render: Literal["browser"] | None = None
    allow_private: bool = False
    obey_robots: bool | None = None
    max_pages: int = Field(default=1, ge=1, le=100)
    timezone: str = "UTC"
    # What the source is about: "foreign-affairs" (a ministry) is weak evidence for an
    # ambiguous acronym (crawler/evidence.py).
    topic: str | None = None
    revisit: Revisits | None = None  # overrides [crawl] revisit; [] turns revisits off

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not SOURCE_ID.match(value):
            raise ValueError(f"{value!r} is not a valid id: use lower-case letters, digits and -")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a known time zone") from None
        return value

    @model_validator(mode="after")
    def _kind_needs(self) -> SourceSpec:
        if self.kind == "html" and self.selectors is None:
            raise ValueError("an html source needs a [sources.selectors] table")
        if self.kind == "json" and self.fields is None:
            raise ValueError("a json source needs a [sources.fields] table")
        return self

    def poll_interval(self, crawl: CrawlSettings) -> float:
        return self.interval if self.interval is not None else crawl.interval

    @property
    def renders(self) -> bool:
        """True when this source's listing pages go through the browser (HTML page kinds only)."""
        return self.render == "browser" and self.kind in RENDERED_KINDS

    def wants_articles(self, crawl: CrawlSettings) -> bool:
        return self.fetch_articles if self.fetch_articles is not None else crawl.fetch_articles

    def revisits(self, crawl: CrawlSettings) -> tuple[float, ...]:
        """Seconds after first seen at which the source's article pages are fetched again;
        none for sources whose items do not come from article pages (no article fetching,
        telegram posts)."""
        if not self.wants_articles(crawl) or self.kind == "telegram":
            return ()
        return self.revisit if self.revisit is not None else crawl.revisit
