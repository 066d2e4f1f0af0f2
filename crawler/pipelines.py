"""Item pipelines: normalise and canonicalise → match organisations → store, counting per source.

The unit that flows through the pipelines is an ItemBatch: the items one response yielded.
Each item is stored atomically (item, version, matches and alert outbox rows); the items of a
batch, and the batches that arrive together, share one commit, because with SQLite's
synchronous=FULL every commit costs an fsync. When a transaction fails it is rolled back whole
and its batches, then its items, are stored one transaction each, so a bad item costs only
itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Self

from loguru import logger
from scrapy.exceptions import DropItem
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from crawler.failures import STORAGE
from crawler.stories import MinHashStories
from crawler.text import clean_text, content_hash
from crawler.urls import canonical_url, is_http_url
from storage.db import lock_writes
from storage.repository import ChannelRule, ItemWrite, MatchRow, SaveResult
from storage.revisits import RevisitResult, keep_page_states, save_quiet_revisits, save_revisit
from storage.writes import save_items

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from sqlalchemy.orm import Session

    from crawler.job import ChannelSpec
    from crawler.matching import OrgMatcher
    from crawler.polls import RoundContext, SourcePoll

MAX_TITLE = 1000
MAX_TEXT = 200_000
GROUP_ITEMS = 1000  # items stored per transaction at most (bounds how long others wait for the turn)
GROUP_DELAY = 0.5  # seconds a response's items may wait for others to share their commit
TURN_RETRY = 0.02  # seconds between asking for the turn to write (crawler.writeturn)
TURN_TRIES = 50  # then wait for it
# Dates more than a day ahead are clock or parsing errors: they would sort first for ever.
FUTURE_SLACK = timedelta(days=1)


@dataclass
class ItemBatch:
    """The items of one response (a feed, a listing page, one article), stored together; or
    what a revisit found (``revisit``, with the item's new title and text as its one item when
    the page changed)."""

    source_id: str
    items: list[ItemWrite] = field(default_factory=list)
    revisit: RevisitResult | None = None


class _RoundPipeline:
    """A pipeline of one round; Scrapy builds it with ``from_crawler``, handing it the round's
    context (the crawl's ROUND_SETTING, ``RoundContext.of``)."""

    def __init__(self, context: RoundContext) -> None:
        self.context = context

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        from crawler.polls import RoundContext

        return cls(RoundContext.of(crawler))


class NormalizePipeline(_RoundPipeline):
    """Clean title and text, bound their size, canonicalise the URL, drop repeats in a round."""

    def process_item(self, batch: ItemBatch) -> ItemBatch:
        kept = []
        for item in batch.items:
            try:
                kept.append(self.normalise(item, dedupe=batch.revisit is None))
            except DropItem as why:
                logger.debug("dropped an item of {}: {}", batch.source_id, why)
        if not kept and batch.revisit is None:
            raise DropItem(f"no usable items from {batch.source_id}")
        batch.items = kept
        return batch

    def normalise(self, item: ItemWrite, *, dedupe: bool = True) -> ItemWrite:
        if not is_http_url(item.url):
            raise DropItem(f"not an http(s) URL: {item.url[:200]!r}")
        item.title = clean_text(item.title)[:MAX_TITLE]
        item.text = clean_text(item.text)[:MAX_TEXT]
        if not item.title and not item.text:
            item.title = item.url
        item.canonical_url = item.canonical_url or canonical_url(item.url)
        item.raw_url = item.raw_url or item.url
        item.published_at = _plausible_date(item.published_at, item.fetched_at)
        if not dedupe:  # a revisit: its item is known, and may also be in this poll's listing
            return item
        poll = self.context.poll(item.source_id)
        key = item.canonical_url
        if key in poll.seen or (item.guid and f"guid:{item.guid}" in poll.seen):
            raise DropItem(f"repeated in this poll: {key}")
        poll.seen.add(key)
        if item.guid:
            poll.seen.add(f"guid:{item.guid}")
        return item


def _plausible_date(value: datetime | None, fetched_at: datetime) -> datetime | None:
    if value is None:
        return None
    limit = fetched_at + FUTURE_SLACK
    return value if value <= limit else None


class MatchPipeline(_RoundPipeline):
    """Find the tracked organisations in title + text; compute the content hash."""

    def process_item(self, batch: ItemBatch) -> ItemBatch:
        topic = self.context.topic(batch.source_id)
        for item in batch.items:
            item.matches = find_matches(self.context.matcher, item.title, item.text, item.language, topic)
            item.content_hash = content_hash(item.title, item.text, cleaned=True)  # normalised above
        return batch


def find_matches(matcher: OrgMatcher, title: str, text: str, language: str | None = None,
                 topic: str | None = None) -> list[MatchRow]:
    """Matches over ``title`` and ``text`` (offsets into "title\\n\\ntext"), with their confidence."""
    joined = f"{title}\n\n{text}" if text else title
    found = matcher.find(joined, language, topic)
    return [MatchRow(organisation=m.organisation, alias=m.alias, form=m.form, snippet=m.snippet,
                     start=m.start, end=m.end, in_title=m.start < len(title),
                     confidence=m.confidence) for m in found]


class StoragePipeline(_RoundPipeline):
    """Save each item atomically (item, version, matches, outbox rows), a batch per commit
    (``storage.writes.save_items``); a failing batch is retried one item per transaction.

    In a crawl, the batches of responses that arrive within GROUP_DELAY of each other share one
    transaction (up to GROUP_ITEMS items): with synchronous=FULL each commit is an fsync, and a
    round of hundreds of feeds would otherwise spend seconds waiting for the disk. A batch's
    items count as stored only once that commit is done; a failing group is retried batch by
    batch, so a bad batch still costs only itself."""

    def open_spider(self) -> None:
        self.channels = channel_rules(self.context.job.channels)
        self.stories = MinHashStories()
        self.group: list[tuple[ItemBatch, asyncio.Future[ItemBatch]]] = []
        self.group_items = 0
        self.group_timer: asyncio.TimerHandle | None = None
        self.ledger = self.context.ledger
        self.turn = self.ledger.turn
        self.turn_tries = 0
        self.ledger.on_done = self.settled

    async def process_item(self, batch: ItemBatch) -> ItemBatch:
        self.stories.prepare(batch.items)  # CPU work, before waiting for the write transaction
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[ItemBatch] = loop.create_future()
        self.group.append((batch, stored))
        self.group_items += len(batch.items)
        if self.group_items >= GROUP_ITEMS:
            self.flush(wait=True)
        elif self.ledger.nothing_to_come(len(self.group)):
            self.flush()  # no response left to share the commit with: waiting would only idle
        elif self.group_timer is None:
            self.group_timer = loop.call_later(GROUP_DELAY, self.flush)
        return await stored

    def settled(self) -> None:
        """A request or a batch of the round is done (``RoundLedger.on_done``): when that was
        the last one the waiting group could share its commit with, store the group now (not
        while it waits for the turn to write: ``flush`` retries that itself)."""
        if (self.group and self.group_timer is not None and self.turn_tries == 0
                and self.ledger.nothing_to_come(len(self.group))):
            self.flush()

    def close_spider(self) -> None:
        self.ledger.on_done = None
        self.flush(wait=True)

    def flush(self, wait: bool = False) -> None:
        """Store the waiting batches in one transaction and settle their futures. Unless told
        to ``wait``, a process whose turn to write it is not goes on crawling and tries again
        TURN_RETRY later (at most TURN_TRIES times, then it waits)."""
        if self.group_timer is not None:
            self.group_timer.cancel()
            self.group_timer = None
        if not self.group:
            return
        if wait or self.turn_tries >= TURN_TRIES:
            self.turn.take()
        elif not self.turn.try_take():
            self.turn_tries += 1
            self.group_timer = asyncio.get_running_loop().call_later(TURN_RETRY, self.flush)
            return
        self.turn_tries = 0
        group, self.group, self.group_items = self.group, [], 0
        try:
            self._flush(group)
        finally:
            self.turn.give_back()

    def _flush(self, group: list[tuple[ItemBatch, asyncio.Future[ItemBatch]]]) -> None:
        polls: list[SourcePoll] = []
        try:
            with self.context.sessions.begin() as session:
                lock_writes(session)
                quiet = self._save_quiet(session, group)
                results = [quiet[index] if index in quiet else self._save_batch(session, batch.items, batch)
                           for index, (batch, _) in enumerate(group)]
                polls = self.context.ledger.record_into(session)  # finished polls share the commit
        except Exception:  # noqa: BLE001 - rolled back as a whole: each batch alone, as outside a group
            results = None
            self.context.ledger.requeue(polls)
        else:
            self.context.ledger.recorded(polls)
        for index, (batch, stored) in enumerate(group):
            try:
                outcome = self.store(batch) if results is None else self._counted(batch, results[index])
            except Exception as exc:  # DropItem, or a bug: the item's error, not the round's
                stored.set_exception(exc)
            else:
                stored.set_result(outcome)

    def store(self, batch: ItemBatch) -> ItemBatch:
        """Store one batch in its own transaction (each item alone if that fails)."""
        poll = self.context.poll(batch.source_id)
        writes = batch.items
        if unprepared := [w for w in writes if w.prepared is None]:
            self.stories.prepare(unprepared)
        try:
            with self.context.sessions.begin() as session:
                lock_writes(session)
                results: list[SaveResult | None] = list(self._save_batch(session, writes, batch))
        except SQLAlchemyError as exc:
            if batch.revisit is not None:  # its lease ends, and the revisit is due again
                logger.error("storing a revisit of {} failed: {}", poll.spec.id, exc)
                poll.fail(STORAGE, f"storing a revisit failed: {exc}"[:300])
                raise DropItem(f"storing a revisit of {batch.source_id} failed") from exc
            # Rolled back as a whole; now each item alone, so one bad item (or a lost insert
            # race with another worker) costs only itself.
            results = [self._save_alone(poll, write) for write in writes]
        return self._counted(batch, results)

    def _counted(self, batch: ItemBatch, results: Sequence[SaveResult | None]) -> ItemBatch:
        poll = self.context.poll(batch.source_id)
        if batch.revisit is not None:  # a version found by a revisit is an update of the item
            for result in results:
                if result is not None and result.status == "updated":
                    count(poll, result, bool(result.organisations))
            return batch
        for write, result in zip(batch.items, results, strict=True):
            if result is not None:
                count(poll, result, bool(write.matches))
        if not any(results):
            raise DropItem(f"storing the items of {batch.source_id} failed")
        return batch

    def _save_quiet(self, session: Session, group: list[tuple[ItemBatch, asyncio.Future[ItemBatch]]]
                    ) -> dict[int, list[SaveResult]]:
        """The group's revisits that found nothing to store (304s, failures, unchanged pages):
        their bookkeeping in a statement or two for all (``save_quiet_revisits``)."""
        picked = {index: revisit_result(batch, batch.items) for index, (batch, _) in enumerate(group)
                  if batch.revisit is not None and not batch.items}
        picked = {index: result for index, result in picked.items() if result.quiet}
        saved = save_quiet_revisits(session, list(picked.values()))
        return {index: [result] for index, result in zip(picked, saved, strict=True)}

    def _save_batch(self, session: Session, writes: list[ItemWrite],
                    batch: ItemBatch | None = None) -> list[SaveResult]:
        """A response's items in one transaction (a few statements for the batch); a revisit
        goes to ``save_revisit``."""
        if batch is not None and batch.revisit is not None:
            return [save_revisit(session, revisit_result(batch, writes), self.channels)]
        return self._save_items(session, writes)

    def _save_items(self, session: Session, writes: list[ItemWrite]) -> list[SaveResult]:
        """``save_items``, and the article pages' validators and baselines for their revisits."""
        results = save_items(session, writes, self.channels, stories=self.stories.rule)
        keep_page_states(session, [(result.item_id, write.page) for write, result
                                   in zip(writes, results, strict=True) if write.page is not None])
        return results

    def _save_alone(self, poll: SourcePoll, write: ItemWrite) -> SaveResult | None:
        """One item in its own transaction; an IntegrityError (another worker stored the same
        item between our read and our insert) is retried once, and then the item is found."""
        for attempt in (1, 2):
            try:
                with self.context.sessions.begin() as session:
                    lock_writes(session)
                    return self._save_items(session, [write])[0]
            except IntegrityError:
                if attempt == 2:
                    break
            except SQLAlchemyError as exc:
                logger.error("storing {} of {} failed: {}", write.canonical_url, poll.spec.id, exc)
                break
        poll.fail(STORAGE, f"storing {write.canonical_url} failed")
        return None


def count(poll: SourcePoll, result: SaveResult, matched: bool) -> None:
    if result.status == "new":
        poll.new += 1
    elif result.status == "updated":
        poll.updated += 1
    else:
        poll.unchanged += 1
    if result.status != "unchanged" and matched:
        poll.matched += 1
    poll.events += len(result.events)


def channel_rules(channels: Iterable[ChannelSpec]) -> list[ChannelRule]:
    return [ChannelRule(id=c.id, organisations=frozenset(c.organisations)
                        if c.organisations is not None else None,
                        max_age=timedelta(seconds=c.max_age_seconds),
                        min_confidence=c.min_confidence, events=frozenset(c.events),
                        sources=frozenset(c.sources) if c.sources is not None else None,
                        query=c.query)
            for c in channels]


def revisit_result(batch: ItemBatch, writes: list[ItemWrite]) -> RevisitResult:
    """The batch's revisit with the normalised title, text, hash and matches of its item."""
    result = batch.revisit
    assert result is not None
    if writes:
        write = writes[0]
        result.title, result.text, result.content_hash = write.title, write.text, write.content_hash
        result.matches = write.matches
    elif result.kind == "page":
        result.changed = False  # nothing usable to store: only the baseline
    return result

