"""A dry run of one source (``sources test``, the preview of ``sources add``): the real crawl
round (fetch, parse, article extraction, matching, storing) run into a throw-away SQLite
database that is deleted afterwards, so the user's database is never opened and no alert
channel is known to the round."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from crawler.job import CrawlJob, SourceEvent, parse_event
from crawler.organisations import OrganisationSpec
from crawler.sources import CrawlSettings, SourceSpec
from storage.db import make_engine, make_session_factory, upgrade
from storage.models import Item
from storage.serialize import iso

DEFAULT_TIMEOUT = 120.0


@dataclass
class TrialItem:
    url: str
    title: str
    published_at: str | None
    text_length: int
    organisations: list[str]
    matches: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "title": self.title, "published_at": self.published_at,
                "text_length": self.text_length, "organisations": self.organisations,
                "matches": self.matches}


@dataclass
class Trial:
    """What one dry run of a source gave."""

    source: str
    outcome: str  # ok, not-modified, or the error class (blocked, empty, parse, timeout, …)
    message: str | None = None
    items: list[TrialItem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "outcome": self.outcome,
                "items": [i.as_dict() for i in self.items]}


def trial_source(spec: SourceSpec, *, crawl: CrawlSettings, organisations: tuple[OrganisationSpec, ...],
                 timeout: float = DEFAULT_TIMEOUT, log_level: str = "ERROR") -> Trial:
    """Crawl ``spec`` once into a scratch database and report its items, newest first."""
    spec = spec.model_copy(update={"enabled": True})
    with tempfile.TemporaryDirectory(prefix="newsmon-trial-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'trial.db'}"
        engine = make_engine(url)
        try:
            upgrade(engine)
            job = CrawlJob(database_url=url, crawl=crawl, sources=(spec,), organisations=organisations,
                           channels=(), deadline_seconds=timeout, log_level=log_level)
            event = run_round(job)
            trial = Trial(source=spec.id, outcome=_outcome(event),
                          message=event.message if event else "the crawl process gave no answer")
            trial.items = read_items(make_session_factory(engine), spec.id)
            if trial.outcome == "ok" and not trial.items:  # a first poll with nothing is not ok here
                trial.outcome, trial.message = "empty", "no items"
        finally:
            engine.dispose()
    return trial


def run_round(job: CrawlJob) -> SourceEvent | None:
    """``python -m crawler`` on ``job``; the source's event (None when it never came)."""
    try:
        done = subprocess.run([sys.executable, "-m", "crawler"], input=job.model_dump_json(),
                              capture_output=True, text=True, timeout=job.deadline_seconds + 15, check=False)
    except subprocess.TimeoutExpired:
        return None
    for line in done.stdout.splitlines():
        event = parse_event(line)
        if event and event.get("kind") == "source":
            return SourceEvent.model_validate(event)
    return None


def _outcome(event: SourceEvent | None) -> str:
    if event is None:
        return "timeout"
    return event.error_class or "error" if event.outcome == "error" else event.outcome


def read_items(sessions: Any, source_id: str) -> list[TrialItem]:
    with sessions() as session:
        items = session.scalars(select(Item).options(selectinload(Item.matches))
                                .order_by(Item.sort_at.desc(), Item.id.desc())).all()
        return [TrialItem(url=i.url, title=i.title, published_at=iso(i.published_at),
                          text_length=len(i.text or ""),
                          organisations=sorted({m.organisation for m in i.matches}),
                          matches=[{"organisation": m.organisation, "alias": m.alias, "form": m.form}
                                   for m in i.matches])
                for i in items]
