"""The JSON the API sends, as pydantic models: the contract's ITEM, its versions and matches, a
story, the status and the one error body. FastAPI uses them as `response_model`, so
/openapi.json (and /docs) types every field with its nullability and a generated client gets
the same classes back. Every field is always sent (null included), so every field is required,
but `removed`: sent (true) only for an item or version whose page is gone.
Keys that storage adds and a model lacks would be dropped: tests/test_api_schema.py compares
them, so a new field joins its model."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema


def _iso(value: datetime) -> str:
    return value.isoformat()


# ISO 8601 with an explicit offset, written as storage writes it ("…T09:30:00+00:00"; pydantic
# alone would write "Z"). Values are checked on the way out: a naive time is a server error.
Time = Annotated[
    AwareDatetime,
    PlainSerializer(_iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2025-02-04T09:30:00+00:00"]}),
]


class Match(BaseModel):
    """Why an item is about an organisation."""

    organisation: str = Field(description="Organisation id, e.g. CICA")
    alias: str = Field(description="The configured alias that matched")
    form: str = Field(description="The words as found in the text (any grammatical case)")
    snippet: str = Field(description="The text around the match")


class Item(BaseModel):
    """The contract's ITEM: one news item, identified by its canonical URL across sources."""

    id: int = Field(ge=1)
    source: str = Field(description="The first source that carried the item")
    sources: list[str] = Field(description="Every source that carried it, in the order first seen")
    url: str = Field(description="The link as published")
    canonical_url: str = Field(description="The URL that identifies the item (tracking parameters removed)")
    title: str
    published_at: Time | None = Field(description="As the source dated it; null when it gave no date")
    first_seen_at: Time = Field(description="When newsmon first stored it")
    language: str | None = Field(description="The source's language, e.g. ru; null when unknown")
    organisations: list[str] = Field(description="Ids of the organisations it mentions (sorted)")
    matches: list[Match]
    story_id: int | None = Field(description="Items with near-identical text share a story (GET /api/stories/{id})")
    version: int = Field(ge=1, description="The number of the current version")
    content_hash: str = Field(description="sha256 of the current title and text, e.g. sha256:…")
    removed: bool = Field(False, exclude_if=lambda v: not v,
                          description="Present (true) only when a revisit found the item's page gone")


class Version(BaseModel):
    """A stored snapshot of an item's title and text."""

    version: int = Field(ge=1)
    fetched_at: Time
    title: str
    text: str
    content_hash: str
    removed: bool = Field(False, exclude_if=lambda v: not v,
                          description="Present (true) only on the version that recorded the page gone")


class ItemDetail(Item):
    """One ITEM with its text, every stored version and the other items of its story."""

    text: str = Field(description="The current text")
    versions: list[Version] = Field(description="Every version, oldest first")
    story: list[Item] = Field(description="The items of its story, itself included, oldest first; "
                                          "[] when it has no story")


class ItemPage(BaseModel):
    """A page of search results, newest first."""

    items: list[Item]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null after the last page")


class Story(BaseModel):
    """The same news seen at several sources."""

    id: int = Field(ge=1)
    items: list[Item] = Field(description="Oldest first", min_length=1)


class LastError(BaseModel):
    """The latest failed poll of a source."""

    model_config = ConfigDict(populate_by_name=True)

    class_: str = Field(alias="class", description="timeout, http-4xx, http-5xx, blocked, parse, encoding, "
                                                    "empty, internal, extract, …")
    message: str | None
    at: Time | None


class SourceRevisits(BaseModel):
    """A source's revisits of its item pages (``[crawl] revisit``)."""

    done: int = Field(ge=0, description="Revisits done")
    due: int = Field(ge=0, description="Revisits due now")
    revisited: int = Field(ge=0, description="Items revisited at least once")
    edited: int = Field(ge=0, description="Items edited after first seen")
    removed: int = Field(ge=0, description="Items whose page is gone")
    edit_rate: float | None = Field(description="edited / revisited; null before any revisit")


class SourceStatus(BaseModel):
    """The polling state of one source."""

    id: str
    name: str
    kind: str
    url: str
    enabled: bool
    last_poll: Time | None
    last_success: Time | None
    last_new_item: Time | None
    next_poll: Time | None
    items: int = Field(ge=0, description="Items this source carried")
    failures: int = Field(ge=0, description="Consecutive failed polls")
    silent: bool = Field(description="No new item for longer than its usual cadence")
    last_error: LastError | None = Field(description="null when the last poll succeeded")
    lease_owner: str | None = Field(description="The worker polling it now, if any")
    revisits: SourceRevisits = Field(description="Its item pages fetched again to find edits and removals")


class WorkerStatus(BaseModel):
    """A live `newsmon run` worker."""

    id: str
    host: str
    pid: int
    started_at: Time
    heartbeat_at: Time
    heartbeat_age_seconds: float = Field(ge=0)
    sources_held: int = Field(ge=0)
    holds: list[str] = Field(description="Ids of the sources it holds a lease on")
    events_held: int = Field(ge=0, description="Alert events it holds a lease on")
    polls: int = Field(ge=0)


class Percentiles(BaseModel):
    """Seconds; null when no alert was delivered yet."""

    p50: float | None
    p95: float | None
    max: float | None
    count: int = Field(ge=0)


class Latency(BaseModel):
    """Detection latency over the newest delivered alerts."""

    published_to_first_seen: Percentiles
    first_seen_to_delivered: Percentiles
    published_to_delivered: Percentiles


class Status(BaseModel):
    """As `newsmon status --format json`."""

    sources: list[SourceStatus]
    workers: list[WorkerStatus]
    latency: Latency


class Health(BaseModel):
    status: Literal["ok"]


class Error(BaseModel):
    """Every error the API answers (4xx) has this body."""

    detail: str = Field(description="What is wrong, in words")
    parameter: str | None = Field(description="The query or path parameter at fault; null when the error "
                                              "is not about one parameter")
