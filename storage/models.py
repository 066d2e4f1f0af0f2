"""SQLAlchemy 2 typed models: sources and their polling state, items, versions, matches,
stories, the alert outbox, the fetch log and workers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# A portable auto-increment key: BIGINT on PostgreSQL, INTEGER (the rowid) on SQLite.
Key = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    # Every model here maps one Table (no mapped joins or selects), so Core inserts and
    # executemanys can take ``Model.__table__`` as the Table it is.
    __table__: ClassVar[Table]


class Source(Base):
    """A configured source and its polling state (the state lives here, not in memory)."""

    __tablename__ = "sources"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(255), default="")  # the URL's host: politeness
    language: Mapped[str | None] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    interval_seconds: Mapped[float] = mapped_column(Float, default=600.0)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    body_hash: Mapped[str | None] = mapped_column(String(80))
    had_items: Mapped[bool] = mapped_column(Boolean, default=False)
    next_poll_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_poll_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_new_item_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error_class: Mapped[str | None] = mapped_column(String(32))
    last_error_message: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_sources_due", "enabled", "next_poll_at"),
                      Index("ix_sources_lease", "lease_owner", "host"))


class Story(Base):
    """Items from several sources that carry near-identical text share one story."""

    __tablename__ = "stories"

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Item(Base):
    """One item, identified by its canonical URL across all sources (and, second, by a source's
    feed GUID, see ItemSource); ``source_id`` is the first source that carried it."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    canonical_url: Mapped[str] = mapped_column(Text)
    url_key: Mapped[str] = mapped_column(String(64))
    guid: Mapped[str | None] = mapped_column(Text)
    guid_key: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    language: Mapped[str | None] = mapped_column(String(16))
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sort_at: Mapped[datetime] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)
    content_hash: Mapped[str] = mapped_column(String(80))
    story_id: Mapped[int | None] = mapped_column(ForeignKey("stories.id", ondelete="SET NULL"))
    # The article page is gone (404/410, or it redirects to the home page or a listing).
    removed: Mapped[bool] = mapped_column(Boolean, server_default=false())

    matches: Mapped[list[Match]] = relationship(
        back_populates="item", cascade="all, delete-orphan", order_by="Match.start"
    )
    versions: Mapped[list[ItemVersion]] = relationship(
        back_populates="item", cascade="all, delete-orphan", order_by="ItemVersion.version"
    )
    links: Mapped[list[ItemSource]] = relationship(
        back_populates="item", cascade="all, delete-orphan", order_by="ItemSource.id", lazy="selectin"
    )

    @property
    def source_ids(self) -> list[str]:
        """Every source that carried the item, in the order first seen."""
        return [link.source_id for link in self.links] or [self.source_id]

    __table_args__ = (
        # (source_id, url_key) is implied by uq_items_url; kept from the first schema.
        UniqueConstraint("source_id", "url_key", name="uq_items_source_url"),
        Index("uq_items_url", "url_key", unique=True),
        Index("ix_items_sort", "sort_at"),
        Index("ix_items_source_sort", "source_id", "sort_at"),
        Index("ix_items_source_seen", "source_id", "first_seen_at"),
        Index("ix_items_story", "story_id"),
    )


class ItemSource(Base):
    """A source that carries an item: its GUID for the item, what it last said of it (the
    content hash, so two sources with different summaries of one article do not make a new
    version at every poll) and its entry's fingerprint (so a feed's edits are noticed)."""

    __tablename__ = "item_sources"

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    guid_key: Mapped[str | None] = mapped_column(String(64))
    content_hash: Mapped[str | None] = mapped_column(String(80))
    entry_hash: Mapped[str | None] = mapped_column(String(80))
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)

    item: Mapped[Item] = relationship(back_populates="links")

    __table_args__ = (
        UniqueConstraint("item_id", "source_id", name="uq_item_sources_item_source"),
        Index(
            "uq_item_sources_source_guid",
            "source_id",
            "guid_key",
            unique=True,
            sqlite_where=guid_key.isnot(None),
            postgresql_where=guid_key.isnot(None),
        ),
        # a source's items: the search filter, status counts and cadence (covering)
        Index("ix_item_sources_source_seen", "source_id", "first_seen_at", "item_id"),
    )


class ItemVersion(Base):
    """A snapshot: every distinct title + text an item has had, with the raw body fetched."""

    __tablename__ = "item_versions"

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    fetched_at: Mapped[datetime] = mapped_column(UtcDateTime)
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    content_hash: Mapped[str] = mapped_column(String(80))
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)  # zlib-compressed response body
    raw_url: Mapped[str | None] = mapped_column(Text)
    raw_status: Mapped[int | None] = mapped_column(Integer)
    raw_headers: Mapped[str | None] = mapped_column(Text)  # JSON object
    # This version records that the page is gone; its title and text are the last ones seen.
    removed: Mapped[bool] = mapped_column(Boolean, server_default=false())

    item: Mapped[Item] = relationship(back_populates="versions")

    __table_args__ = (UniqueConstraint("item_id", "version", name="uq_item_versions_item_version"),
                      Index("ix_item_versions_fetched", "fetched_at"))  # recently edited


class Revisit(Base):
    """An item's revisit schedule: its article page is fetched again ``[crawl] revisit`` after
    it was first seen. ``done`` revisits are done, the next is due at ``due_at`` (None: none
    left); the page's validators make it a conditional request; ``page_title`` and
    ``page_hash`` are what the page said last time (a revisit compares against them); a worker
    doing it holds the lease."""

    __tablename__ = "revisits"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    page_title: Mapped[str | None] = mapped_column(Text)
    page_hash: Mapped[str | None] = mapped_column(String(80))
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_revisits_due", "source_id", "due_at"),)


class Match(Base):
    """Why an item is about an organisation: the alias, the form found and a snippet."""

    __tablename__ = "matches"

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    organisation: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(Text)
    form: Mapped[str] = mapped_column(Text)
    snippet: Mapped[str] = mapped_column(Text)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    in_title: Mapped[bool] = mapped_column(Boolean, default=False)

    item: Mapped[Item] = relationship(back_populates="matches")

    __table_args__ = (
        Index("ix_matches_org_item", "organisation", "item_id"),
        Index("ix_matches_item", "item_id"),
    )


class StoryBand(Base):
    """MinHash LSH bands of an item's text: items sharing a band are story candidates."""

    __tablename__ = "story_bands"

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    band: Mapped[int] = mapped_column(BigInteger)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_story_bands_band", "band", "seen_at"),
        Index("ix_story_bands_item", "item_id"),
        Index("ix_story_bands_seen", "seen_at"),  # the prune deletes by age
    )


class ItemSignature(Base):
    """The MinHash signature of an item's current text (for the similarity check)."""

    __tablename__ = "item_signatures"

    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    signature: Mapped[bytes] = mapped_column(LargeBinary)


class AlertKey(Base):
    """What has been alerted: a story is alerted once per organisation and channel."""

    __tablename__ = "alert_keys"

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(64))
    story_id: Mapped[int] = mapped_column(BigInteger)
    organisation: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("channel", "story_id", "organisation", name="uq_alert_keys"),
    )


class AlertEvent(Base):
    """The outbox: an alert written with its item, sent afterwards until confirmed."""

    __tablename__ = "alert_outbox"

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(64))
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="SET NULL"))
    story_id: Mapped[int | None] = mapped_column(BigInteger)
    organisations: Mapped[str] = mapped_column(Text)  # JSON list of ids
    payload: Mapped[str] = mapped_column(Text)  # JSON body, fixed at creation
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    first_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_alert_outbox_pending", "delivered_at", "next_attempt_at"),)


class FetchLog(Base):
    """One poll of one source: its outcome, as data. On PostgreSQL the table is partitioned by
    day of ``started_at`` (storage/partitions.py); its primary key there is (id, started_at)."""

    __tablename__ = "fetch_log"

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime)
    outcome: Mapped[str] = mapped_column(String(16))  # ok | not-modified | error
    error_class: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text)
    http_status: Mapped[int | None] = mapped_column(Integer)
    new: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    matched: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        Index("ix_fetch_log_source", "source_id", "started_at"),
        Index("ix_fetch_log_started", "started_at"),  # the prune deletes by age
    )


class PollCount(Base):
    """Polls of a source so far, per outcome and error class ("" for none): the fetch log rolled
    up, one increment in the transaction that writes each fetch-log row, so `status` and
    `/metrics` never count the log (which is pruned; these counters are not)."""

    __tablename__ = "poll_counts"

    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    error_class: Mapped[str] = mapped_column(String(32), primary_key=True, default="")
    polls: Mapped[int] = mapped_column(BigInteger, default=0)


class Worker(Base):
    """A running `newsmon run` process and its heartbeat."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    polls: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # fetch-log rows it wrote


class Backfill(Base):
    """Where ``newsmon backfill`` of a source stands: the pages still to read (so a second run
    continues), how far back it went, and its counts."""

    __tablename__ = "backfills"

    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True)
    since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    pending: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of URLs still to read
    seen: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of page URLs read
    pages: Mapped[int] = mapped_column(Integer, default=0)
    new: Mapped[int] = mapped_column(Integer, default=0)
    known: Mapped[int] = mapped_column(Integer, default=0)
    oldest_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reached_since: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
