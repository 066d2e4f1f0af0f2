"""Through a real crawl round: a story reprinted by two outlets is one story and one alert;
a different text about the same meeting is another story."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from scheduler.runner import crawl_round
from storage.db import make_engine, make_session_factory
from storage.models import AlertEvent, Item
from tests.plugins.sites import Site, rss
from tests.test_crawl_end_to_end import make_config, sync

pytestmark = pytest.mark.slow

BODY = ("Заместитель министра иностранных дел России Андрей Руденко встретился с послом "
        "Азербайджана Рахманом Мустафаевым. Стороны обсудили взаимодействие в рамках Совещания "
        "по взаимодействию и мерам доверия в Азии (СВМДА) в период азербайджанского "
        "председательства, подготовку саммита и работу специальных рабочих групп. Отмечено, что "
        "Баку уделяет приоритетное внимание укреплению мер доверия в экономическом, экологическом "
        "и гуманитарном измерениях, а также развитию транспортной связанности и цифровизации. "
        "Российская сторона подтвердила готовность к конструктивному взаимодействию с "
        "председательством и секретариатом Совещания, включая участие в заседаниях Комитета "
        "старших должностных лиц и форума аналитических центров. Также были затронуты вопросы "
        "двусторонней повестки дня, графика предстоящих контактов и подготовки межмидовских "
        "консультаций по проблематике международных организаций.")
OTHER = ("Посол Азербайджана Рахман Мустафаев дал интервью о планах председательства в СВМДА: "
         "Баку предлагает новые проекты в сфере цифровизации и транспортной связанности Азии.")


def feed(site: Site, name: str, items: list[tuple[str, str]]) -> str:
    now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    path = site.unique(f"/stories/{name}") + ".xml"
    site.set(path, rss([{"title": title, "link": site.url(f"{path}/{i}"), "guid": f"{name}-{i}",
                         "pubDate": now, "description": text} for i, (title, text) in enumerate(items)]),
             "application/rss+xml")
    return site.url(path)


def test_reprints_share_a_story_and_alert_once(site: Site, sqlite_url: str) -> None:
    items = {
        "outlet-a": ("Руденко и Мустафаев обсудили СВМДА", f"БАКУ /Trend/ - {BODY}"),
        "outlet-b": ("Rudenko, Mustafayev discuss CICA", f"Баку, 4 февраля, AZERTAC. {BODY} Follow us on Telegram."),
        "outlet-c": ("Интервью посла о СВМДА", OTHER),
    }
    sources = [{"id": source, "url": feed(site, source, [item]), "allow_private": True, "fetch_articles": False}
               for source, item in items.items()]
    config = make_config(sqlite_url, sources, obey_robots=False)
    sync(config)
    report = crawl_round(config, None, timeout=60)
    assert {e.source_id: e.outcome for e in report.sources} == dict.fromkeys(["outlet-a", "outlet-b", "outlet-c"], "ok")

    sessions = make_session_factory(make_engine(sqlite_url))
    with sessions() as session:
        stories = dict(session.execute(select(Item.source_id, Item.story_id)).all())
        events = session.scalars(select(AlertEvent)).all()
    assert stories["outlet-a"] == stories["outlet-b"] != stories["outlet-c"]
    alerted = sorted(json.loads(e.payload)["item"]["story_id"] for e in events)
    assert alerted == sorted([stories["outlet-a"], stories["outlet-c"]])
