"""The contract between the scheduler and a crawl round: what to crawl (a CrawlJob, sent as
JSON to ``python -m crawler`` on stdin) and what happened (events, one JSON object per line
on stdout)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from crawler.organisations import OrganisationSpec
from crawler.sources import CrawlSettings, SourceSpec
from storage.repository import DEFAULT_MIN_CONFIDENCE


class ChannelSpec(BaseModel):
    """What the crawl needs to know of an alert channel to write its outbox rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    organisations: tuple[str, ...] | None = None
    max_age_seconds: float = 2 * 86400.0
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    events: tuple[str, ...] = ("match",)
    sources: tuple[str, ...] | None = None
    query: str | None = None


class CrawlJob(BaseModel):
    """One crawl round: these sources, now, writing into this database."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str
    crawl: CrawlSettings = CrawlSettings()
    sources: tuple[SourceSpec, ...]
    organisations: tuple[OrganisationSpec, ...] = ()
    channels: tuple[ChannelSpec, ...] = ()
    worker_id: str | None = None
    deadline_seconds: float = Field(default=300.0, gt=0)
    log_level: str = "WARNING"
    log_json: bool = False
    progress: bool = False
    # Per-host request budgets of this process when a host's sources are split over several
    # processes of one round (their sum stays crawl.concurrency_per_host).
    host_concurrency: dict[str, int] = Field(default_factory=dict)
    # Where the crawl may keep files between rounds (crawler.morphology); None: nowhere.
    cache_dir: str | None = None


class SourceEvent(BaseModel):
    """Emitted once per source when its poll is over (``kind="source"``)."""

    kind: Literal["source"] = "source"
    source_id: str
    outcome: Literal["ok", "not-modified", "error"]
    error_class: str | None = None
    message: str | None = None
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    matched: int = 0
    events: int = 0
    # Failed polls in a row before this one (None: not known). A success after none needs no
    # look at the fetch log to be logged (scheduler.polllog).
    previous_failures: int | None = None


class ProgressEvent(BaseModel):
    """Emitted as requests finish (``kind="progress"``), for a progress bar."""

    kind: Literal["progress"] = "progress"
    done: int
    total: int


def parse_event(line: str) -> dict[str, Any] | None:
    """Decode one stdout line of a crawl round; None for anything that is not an event."""
    import json

    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "kind" in value else None
