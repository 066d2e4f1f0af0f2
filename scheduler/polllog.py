"""The poll summary: one log line per poll outcome, and no flood from a source that keeps
failing. After the third failure in a row of the same class, a source's failures are logged at
most once an hour until it recovers; the recovery is logged once.

What was already said is worked out from the fetch log (each poll's outcome, in the database),
not from memory: the crawl runs in subprocesses, several workers may poll one source in turn,
and a restarted daemon carries on where the last one was."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from loguru import logger

from storage.queries import PollRecord, recent_polls

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

QUIET_AFTER = 3  # failures of one class in a row that are each logged
QUIET_EVERY = timedelta(hours=1)  # then at most one line per this
HISTORY_LIMIT = 500  # polls looked at (a streak longer than this is judged on its tail)


@dataclass(frozen=True)
class Verdict:
    """Whether to log this poll, and what to add to its line."""

    log: bool = True
    note: str = ""


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def _streak(history: Sequence[PollRecord]) -> list[PollRecord]:
    """The failures of the newest poll's class in a row, oldest first."""
    newest = history[0]
    streak = []
    for poll in history:
        if poll.outcome != "error" or poll.error_class != newest.error_class:
            break
        streak.append(poll)
    return streak[::-1]


def verdict(history: Sequence[PollRecord]) -> Verdict:
    """What to say about the newest poll of ``history`` (newest first, this poll included)."""
    if not history:
        return Verdict()
    newest = history[0]
    if newest.outcome != "error":
        failed = []
        for poll in history[1:]:
            if poll.outcome != "error":
                break
            failed.append(poll)
        if not failed:
            return Verdict()
        return Verdict(note=f" (recovered after {len(failed)} failed poll{'s' if len(failed) > 1 else ''} "
                            f"since {_when(failed[-1].started_at)})")
    streak = _streak(history)
    if len(streak) < QUIET_AFTER:
        return Verdict()
    if len(streak) == QUIET_AFTER:
        return Verdict(note=f" ({QUIET_AFTER} failures in a row: logged at most hourly from now "
                            "until it recovers)")
    last_said = streak[QUIET_AFTER - 1].started_at
    said = False
    for poll in streak[QUIET_AFTER:]:
        said = poll.started_at - last_said >= QUIET_EVERY
        if said:
            last_said = poll.started_at
    if not said:
        return Verdict(log=False)
    return Verdict(note=f" (failing since {_when(streak[0].started_at)}, {len(streak)} polls in a row)")


def _event_dict(event: Any) -> dict[str, Any]:
    if isinstance(event, dict):
        return event
    dump = getattr(event, "model_dump", None)
    return dump() if callable(dump) else dict(vars(event))


class PollLog:
    """Logs each source event of a round (the daemon's ``on_event``)."""

    def __init__(self, sessions: sessionmaker[Session] | None = None) -> None:
        """:param sessions: the database whose fetch log says what was logged before; without
            it every poll is logged."""
        self.sessions = sessions

    def history(self, source_id: str) -> list[PollRecord]:
        if self.sessions is None:
            return []
        with self.sessions() as session:
            history = recent_polls(session, source_id, 2)
            if len(history) == 2 and history[1].outcome == "error":  # a streak goes on or ends
                history = recent_polls(session, source_id, HISTORY_LIMIT)
        return history

    def judge(self, source_id: str, outcome: str) -> Verdict:
        try:
            history = self.history(source_id)
        except Exception as exc:  # the log line matters more than its throttling
            logger.opt(exception=exc).debug("reading the poll history of {} failed", source_id)
            return Verdict()
        if history and history[0].outcome != outcome:
            return Verdict()  # the fetch log does not have this poll (yet): say it
        return verdict(history)

    def __call__(self, event: Any) -> None:
        e = _event_dict(event)
        if e.get("kind", "source") != "source":
            return
        source, outcome = e.get("source_id"), str(e.get("outcome"))
        if outcome != "error" and e.get("previous_failures") == 0:
            said = Verdict()  # a success after successes: nothing to look up (one query a poll)
        else:
            said = self.judge(str(source), outcome)
        if not said.log:
            logger.bind(source=source, outcome=outcome, error_class=e.get("error_class")).debug(
                "poll {} error {}: {} (still failing)", source, e.get("error_class"), e.get("message"))
            return
        if outcome == "error":
            logger.bind(source=source, outcome=outcome, error_class=e.get("error_class")).warning(
                "poll {} error {}: {}{}", source, e.get("error_class"), e.get("message"), said.note)
            return
        logger.bind(source=source, outcome=outcome).info(
            "poll {} {} new={} updated={} unchanged={} matched={} alerts={}{}", source, outcome,
            e.get("new", 0), e.get("updated", 0), e.get("unchanged", 0), e.get("matched", 0),
            e.get("events", 0), said.note)
