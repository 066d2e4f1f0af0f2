"""/metrics: a Prometheus collector that reads the database on every scrape."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from storage import stats
from storage.queries import outbox_backlog, worker_status
from storage.revisits import revisit_stats

LATENCY_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)


def _histogram(samples: dict[str, list[float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "newsmon_detection_latency_seconds",
        "Detection latency per stage over the newest delivered alerts", labels=["stage"])
    for stage, values in samples.items():
        buckets = [(str(bound), float(sum(1 for v in values if v <= bound))) for bound in LATENCY_BUCKETS]
        buckets.append(("+Inf", float(len(values))))
        family.add_metric([stage], buckets, sum_value=float(sum(values)))
    return family


class DatabaseCollector(Collector):
    """Items, matches, alerts, polls and latency, counted in the database at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as session:
            yield GaugeMetricFamily("newsmon_items", "Items stored", value=stats.item_count(session))
            matches = GaugeMetricFamily("newsmon_matched_items", "Items matched per organisation",
                                        labels=["organisation"])
            for org, n in sorted(stats.matches_per_organisation(session).items()):
                matches.add_metric([org], n)
            yield matches
            alerts = GaugeMetricFamily("newsmon_alert_events", "Alert events per organisation and state",
                                       labels=["organisation", "state"])
            for (org, state), n in sorted(stats.alerts_per_organisation(session).items()):
                alerts.add_metric([org, state], n)
            yield alerts
            yield GaugeMetricFamily("newsmon_outbox_backlog", "Alert events not yet delivered",
                                    value=outbox_backlog(session))
            yield from self._polls(session)
            yield from self._revisits(session)
            yield from self._workers(session)
            yield _histogram(stats.latency_samples(session))

    def _polls(self, session: Session) -> Iterator[Metric]:
        polls = CounterMetricFamily("newsmon_polls", "Polls per source and outcome (rolled-up counters)",
                                    labels=["source", "outcome"])
        errors = CounterMetricFamily("newsmon_poll_errors", "Failed polls per source and error class",
                                     labels=["source", "class"])
        totals: dict[tuple[str, str], int] = {}
        for (src, outcome, cls), n in sorted(stats.polls_per_source(session).items()):
            totals[(src, outcome)] = totals.get((src, outcome), 0) + n
            if outcome == "error":
                errors.add_metric([src, cls or "unknown"], n)
        for (src, outcome), n in totals.items():
            polls.add_metric([src, outcome], n)
        yield polls
        yield errors

    def _revisits(self, session: Session) -> Iterator[Metric]:
        done = CounterMetricFamily("newsmon_revisits_done", "Article revisits done per source",
                                   labels=["source"])
        due = GaugeMetricFamily("newsmon_revisits_due", "Article revisits due now per source",
                                labels=["source"])
        edited = GaugeMetricFamily("newsmon_items_edited", "Items edited after first seen, per source",
                                   labels=["source"])
        removed = GaugeMetricFamily("newsmon_items_removed", "Items whose page was removed, per source",
                                    labels=["source"])
        rate = GaugeMetricFamily("newsmon_edit_rate", "Share of revisited items edited after first seen",
                                 labels=["source"])
        for source, found in sorted(revisit_stats(session, datetime.now(UTC)).items()):
            done.add_metric([source], found.done)
            due.add_metric([source], found.due)
            edited.add_metric([source], found.edited)
            removed.add_metric([source], found.removed)
            if found.edit_rate is not None:
                rate.add_metric([source], found.edit_rate)
        yield from (done, due, edited, removed, rate)

    def _workers(self, session: Session) -> Iterator[Metric]:
        families = {
            "heartbeat_age_seconds": GaugeMetricFamily(
                "newsmon_worker_heartbeat_age_seconds", "Seconds since a live worker's heartbeat",
                labels=["worker", "host"]),
            "sources_held": GaugeMetricFamily(
                "newsmon_worker_sources_held", "Source leases a live worker holds", labels=["worker", "host"]),
            "events_held": GaugeMetricFamily(
                "newsmon_worker_events_held", "Alert event leases a live worker holds",
                labels=["worker", "host"]),
        }
        polls = CounterMetricFamily("newsmon_worker_polls", "Polls done by a live worker (its counter)",
                                    labels=["worker", "host"])
        for worker in worker_status(session):
            labels = [worker["id"], worker["host"]]
            for key, family in families.items():
                family.add_metric(labels, worker[key])
            polls.add_metric(labels, worker["polls"])
        yield from families.values()
        yield polls


def make_registry(sessions: sessionmaker[Session]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(sessions))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
