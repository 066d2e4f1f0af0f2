"""Stories on SQLite and PostgreSQL: syndicated copy joins one story and is alerted once; different
texts about one meeting, templated read-outs, old items and short texts get stories of their own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from crawler.stories import THRESHOLD, MinHashStories, similarity
from storage.models import AlertEvent, Item, ItemSignature, StoryBand
from storage.repository import ChannelRule, ItemWrite, MatchRow, SaveResult, SourceRow, sync_sources
from storage.writes import save_item

NOW = datetime(2025, 2, 4, 12, 0, tzinfo=UTC)
CICA = MatchRow("CICA", "СВМДА", "СВМДА", "…мерам доверия в Азии (СВМДА)…")
HOOK = [ChannelRule("hook")]

TREND = ("Азербайджан примет заседание Специальной рабочей группы СВМДА", """\
БАКУ /Trend/ - Азербайджан примет очередное заседание Специальной рабочей группы Совещания по \
взаимодействию и мерам доверия в Азии (СВМДА) в апреле текущего года.
Об этом сообщил исполнительный директор Секретариата СВМДА Кайрат Сарыбай на встрече с заместителем \
министра иностранных дел Азербайджана Эльнуром Мамедовым.
Стороны обсудили ход подготовки к заседанию, приоритеты председательства Азербайджана в СВМДА и \
проведение саммита организации в Баку в 2026 году.
Мамедов отметил, что Азербайджан придает большое значение укреплению мер доверия в Азии и готов \
продолжать тесное сотрудничество с Секретариатом.
Сарыбай поблагодарил азербайджанскую сторону за активную работу и высоко оценил вклад Баку в \
развитие организации.
Follow Trend on Telegram. Only most interesting and important news""")

AZERTAC = ("Азербайджан примет заседание рабочей группы СВМДА", """\
Баку, 4 февраля, AZERTAC. Азербайджан примет очередное заседание Специальной рабочей группы \
Совещания по взаимодействию и мерам доверия в Азии (СВМДА) в апреле текущего года.
Об этом сообщил исполнительный директор Секретариата СВМДА Кайрат Сарыбай на встрече с заместителем \
министра иностранных дел Азербайджана Эльнуром Мамедовым.
Стороны обсудили ход подготовки к заседанию, приоритеты председательства Азербайджана в СВМДА и \
проведение саммита организации в Баку в 2026 году.
Мамедов отметил, что Азербайджан придает большое значение укреплению мер доверия в Азии и готов \
продолжать тесное сотрудничество с Секретариатом.
Сарыбай поблагодарил азербайджанскую сторону за активную работу и высоко оценил вклад Баку в \
развитие организации.""")

# The same meeting, written up independently: same names, same event, different text.
MFA_AZ = ("О встрече заместителя министра иностранных дел Азербайджана Э.Мамедова с исполнительным "
          "директором СВМДА", """\
4 февраля заместитель министра иностранных дел Азербайджанской Республики Эльнур Мамедов принял \
исполнительного директора Секретариата СВМДА Кайрата Сарыбая.
В ходе беседы были рассмотрены вопросы повестки дня Совещания по взаимодействию и мерам доверия в \
Азии, в том числе подготовка к саммиту в Баку.
Эльнур Мамедов подчеркнул, что азербайджанское председательство нацелено на практическую \
реализацию мер доверия в экономическом и гуманитарном измерениях.
Кайрат Сарыбай проинформировал о деятельности Секретариата и планах на текущий год. Стороны \
договорились поддерживать регулярные контакты.""")

# Two different meetings read out from one ministry template.
MID_AZ = ("О встрече заместителя Министра иностранных дел России А.Ю.Руденко с Послом Азербайджана "
          "П.Б.Гусейновым", """\
4 февраля состоялась встреча заместителя Министра иностранных дел Российской Федерации А.Ю.Руденко \
с Чрезвычайным и Полномочным Послом Азербайджанской Республики в Российской Федерации П.Б.Гусейновым.
В ходе беседы обсуждены актуальные вопросы российско-азербайджанской повестки дня, в том числе \
взаимодействие в рамках Совещания по взаимодействию и мерам доверия в Азии (СВМДА).""")
MID_KZ = ("О встрече заместителя Министра иностранных дел России А.Ю.Руденко с Послом Казахстана "
          "Д.Т.Ахметовым", """\
5 февраля состоялась встреча заместителя Министра иностранных дел Российской Федерации А.Ю.Руденко \
с Чрезвычайным и Полномочным Послом Республики Казахстан в Российской Федерации Д.Т.Ахметовым.
В ходе беседы обсуждены актуальные вопросы российско-казахстанской повестки дня, в том числе \
взаимодействие в рамках Совещания по взаимодействию и мерам доверия в Азии (СВМДА).""")

SOURCES = ("trend", "azertac", "mfa-az", "mid-ru")


def write(source: str, story: tuple[str, str], n: int = 1, at: datetime = NOW, **overrides: object) -> ItemWrite:
    title, text = story
    url = f"https://{source}.example/news/{n}"
    values: dict[str, object] = {
        "source_id": source, "url": url, "canonical_url": url, "title": title, "text": text,
        "content_hash": f"sha256:{source}-{n}-{hash(text)}", "fetched_at": at,
        "published_at": at - timedelta(minutes=30), "matches": [CICA],
    }
    values.update(overrides)
    return ItemWrite(**values)  # type: ignore[arg-type]


@pytest.fixture
def factory(session_factory):
    with session_factory.begin() as session:
        sync_sources(session, [SourceRow(s, "feed", f"https://{s}.example/rss") for s in SOURCES], NOW)
    return session_factory


def save(factory, item: ItemWrite) -> SaveResult:
    """One save in its own transaction with fresh signatures, as a separate worker would do it."""
    stories = MinHashStories()
    stories.prepare([item])
    with factory.begin() as session:
        return save_item(session, item, HOOK, stories=stories.rule)


def count(factory, model) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model))


def signature(story: tuple[str, str]) -> bytes:
    signed = MinHashStories().signature(write("trend", story))
    assert signed is not None
    return signed[0]


def test_threshold_separates_copy_from_template_and_other_texts():
    assert similarity(signature(TREND), signature(AZERTAC)) >= THRESHOLD + 0.1
    assert similarity(signature(MID_AZ), signature(MID_KZ)) <= THRESHOLD - 0.05  # bodies only: 0.62
    assert similarity(signature(TREND), signature(MFA_AZ)) < 0.15


def test_syndicated_copy_joins_the_story_silently(factory):
    first = save(factory, write("trend", TREND))
    copy = save(factory, write("azertac", AZERTAC, at=NOW + timedelta(hours=1)))
    assert copy.item_id != first.item_id and copy.status == "new"
    assert copy.story_id == first.story_id
    assert len(first.events) == 1 and copy.events == []
    assert count(factory, AlertEvent) == 1
    with factory() as session:
        members = session.scalars(select(Item.source_id).where(Item.story_id == first.story_id))
        assert sorted(members) == ["azertac", "trend"]


def test_different_texts_about_one_meeting_are_two_stories(factory):
    agency = save(factory, write("trend", TREND))
    ministry = save(factory, write("mfa-az", MFA_AZ, at=NOW + timedelta(minutes=10)))
    assert agency.story_id != ministry.story_id
    assert len(agency.events) == 1 and len(ministry.events) == 1
    assert count(factory, AlertEvent) == 2


def test_readouts_from_one_template_are_two_stories(factory):
    first = save(factory, write("mid-ru", MID_AZ, n=1))
    second = save(factory, write("mid-ru", MID_KZ, n=2, at=NOW + timedelta(hours=3)))
    assert first.story_id != second.story_id
    assert len(first.events) == 1 and len(second.events) == 1


def test_copy_outside_the_window_starts_a_new_story(factory):
    first = save(factory, write("trend", TREND))
    late = NOW + timedelta(days=3, minutes=1)
    copy = save(factory, write("azertac", AZERTAC, at=late))
    assert copy.story_id != first.story_id


def test_window_is_a_constructor_argument(factory):
    first = save(factory, write("trend", TREND))
    stories = MinHashStories(window=timedelta(days=7))
    stories.prepare([late := write("azertac", AZERTAC, at=NOW + timedelta(days=5))])
    with factory.begin() as session:
        copy = save_item(session, late, HOOK, stories=stories.rule)
    assert copy.story_id == first.story_id


def test_short_text_is_its_own_story(factory):
    short = ("СВМДА", "Заседание СВМДА в Баку.")
    assert MinHashStories().signature(write("trend", short)) is None
    first = save(factory, write("trend", short))
    second = save(factory, write("azertac", short))
    assert first.story_id != second.story_id
    assert count(factory, ItemSignature) == 0 and count(factory, StoryBand) == 0


def test_an_edit_keeps_the_story_and_replaces_the_bands(factory):
    first = save(factory, write("trend", TREND))
    title, text = TREND
    edited = save(factory, write("trend", (title, text + "\nДополнено."), content_hash="sha256:edited"))
    assert (edited.status, edited.version, edited.story_id) == ("updated", 2, first.story_id)
    assert count(factory, StoryBand) == len(MinHashStories().signature(write("trend", TREND))[1])
    copy = save(factory, write("azertac", AZERTAC))
    assert copy.story_id == first.story_id and copy.events == []
