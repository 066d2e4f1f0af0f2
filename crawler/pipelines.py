"""Item pipelines: normalise and canonicalise → match organisations → store (item, version,
matches and alert outbox rows in one transaction per item), counting per source."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from loguru import logger
from scrapy.exceptions import DropItem
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from crawler.items import ItemRecord
from crawler.text import clean_text, content_hash
from crawler.urls import canonical_url, is_http_url
from storage.repository import ChannelRule, ItemWrite, MatchRow, save_item

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from crawler.polls import RoundContext

MAX_TITLE = 1000
MAX_TEXT = 200_000
# Dates more than a day ahead are clock or parsing errors: they would sort first for ever.
FUTURE_SLACK = timedelta(days=1)


@dataclass
class CrawledItem:
    """An item on its way through the pipelines."""

    record: ItemRecord
    canonical_url: str = ""
    matches: list[MatchRow] = field(default_factory=list)
    content_hash: str = ""


class _RoundPipeline:
    def __init__(self, context: RoundContext | None = None) -> None:
        self.context = context
        self.crawler: Crawler | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> _RoundPipeline:
        pipeline = cls()
        pipeline.crawler = crawler
        return pipeline

    def open_spider(self) -> None:
        if self.context is None and self.crawler is not None:
            self.context = self.crawler.spider.context  # type: ignore[union-attr]

    @property
    def ctx(self) -> RoundContext:
        assert self.context is not None, "pipeline used outside a round"
        return self.context


class NormalizePipeline(_RoundPipeline):
    """Clean title and text, bound their size, canonicalise the URL, drop repeats in a round."""

    def process_item(self, item: CrawledItem) -> CrawledItem:
        record = item.record
        if not is_http_url(record.url):
            raise DropItem(f"not an http(s) URL: {record.url[:200]!r}")
        record.title = clean_text(record.title)[:MAX_TITLE]
        record.text = clean_text(record.text)[:MAX_TEXT]
        if not record.title and not record.text:
            record.title = record.url
        item.canonical_url = item.canonical_url or canonical_url(record.url)
        record.published_at = _plausible_date(record.published_at, record.fetched_at)
        poll = self.ctx.poll(record.source_id)
        key = item.canonical_url
        if key in poll.seen or (record.guid and f"guid:{record.guid}" in poll.seen):
            raise DropItem(f"repeated in this poll: {key}")
        poll.seen.add(key)
        if record.guid:
            poll.seen.add(f"guid:{record.guid}")
        return item


def _plausible_date(value: datetime | None, fetched_at: datetime | None) -> datetime | None:
    if value is None:
        return None
    limit = (fetched_at or datetime.now(UTC)) + FUTURE_SLACK
    return value if value <= limit else None


class MatchPipeline(_RoundPipeline):
    """Find the tracked organisations in title + text; compute the content hash."""

    def process_item(self, item: CrawledItem) -> CrawledItem:
        record = item.record
        item.matches = find_matches(self.ctx.matcher, record.title, record.text)
        item.content_hash = content_hash(record.title, record.text)
        return item


def find_matches(matcher: object, title: str, text: str) -> list[MatchRow]:
    """Matches over ``title`` and ``text`` (offsets into "title\\n\\ntext")."""
    joined = f"{title}\n\n{text}" if text else title
    found = matcher.find(joined)  # type: ignore[attr-defined]
    return [MatchRow(organisation=m.organisation, alias=m.alias, form=m.form, snippet=m.snippet,
                     start=m.start, end=m.end, in_title=m.start < len(title)) for m in found]


class StoragePipeline(_RoundPipeline):
    """Save each item in its own transaction (item, version, matches, outbox rows)."""

    def open_spider(self) -> None:
        super().open_spider()
        self.channels = channel_rules(self.ctx.job.channels)

    def process_item(self, item: CrawledItem) -> CrawledItem:
        poll = self.ctx.poll(item.record.source_id)
        write = item_write(item)
        try:
            result = self._save(write)
        except SQLAlchemyError as exc:
            poll.warn(f"storing {write.canonical_url} failed: {type(exc).__name__}")
            logger.error("storing {} of {} failed: {}", write.canonical_url, poll.spec.id, exc)
            raise DropItem(f"storage failed: {exc}") from None
        if result.status == "new":
            poll.new += 1
        elif result.status == "updated":
            poll.updated += 1
        else:
            poll.unchanged += 1
        if result.status != "unchanged" and write.matches:
            poll.matched += 1
        poll.events += len(result.events)
        return item

    def _save(self, write: ItemWrite):  # noqa: ANN202 - storage.repository.SaveResult
        sessions = self.ctx.sessions
        try:
            with sessions.begin() as session:
                return save_item(session, write, self.channels)
        except IntegrityError:
            # Another worker stored the same item between our read and our insert: once more,
            # and this time the item is found.
            with sessions.begin() as session:
                return save_item(session, write, self.channels)


def channel_rules(channels: object) -> list[ChannelRule]:
    return [ChannelRule(id=c.id, organisations=frozenset(c.organisations)
                        if c.organisations is not None else None,
                        max_age=timedelta(seconds=c.max_age_seconds))
            for c in channels]  # type: ignore[attr-defined]


def item_write(item: CrawledItem) -> ItemWrite:
    record = item.record
    return ItemWrite(
        source_id=record.source_id, url=record.url, canonical_url=item.canonical_url,
        title=record.title, text=record.text, content_hash=item.content_hash,
        fetched_at=record.fetched_at or datetime.now(UTC), guid=record.guid,
        language=record.language, published_at=record.published_at, matches=item.matches,
        raw=record.raw, raw_url=record.raw_url or record.url, raw_status=record.raw_status,
        raw_headers=record.raw_headers,
    )
