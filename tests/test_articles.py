"""Tests for crawler.articles: text, title, canonical URL and date from article pages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crawler.articles import extract_article

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Site title</title>
<link rel="canonical" href="/ru/foreign_policy/news/1990001/">
<meta property="og:title" content="О встрече А.Ю.Руденко">
{date}
</head><body><nav><a href="/">Главная</a><a href="/news">Новости</a></nav>
<div class="page-body"><h1>Заголовок H1</h1>
<div class="text article-content"><p>4 февраля заместитель Министра иностранных дел России А.Ю.Руденко провёл
встречу с Послом Азербайджана Р.С.Мустафаевым. Рассмотрены вопросы взаимодействия в рамках Совещания по
взаимодействию и мерам доверия в Азии (СВМДА) в период азербайджанского председательства.</p>
<p>Стороны обсудили подготовку к саммиту СВМДА в 2026 году и планы секретариата на текущий год.</p></div>
<script>var tracking = "should not appear";</script></div><footer>© 2025 подвал сайта</footer></body></html>"""
URL = "https://mid.ru/ru/foreign_policy/news/1990001/?utm_source=tg"


def test_trafilatura_main_text() -> None:
    article = extract_article(PAGE.format(date=""), url=URL)
    assert "Р.С.Мустафаевым" in article.text and "СВМДА в 2026 году" in article.text
    assert "should not appear" not in article.text and "подвал" not in article.text
    assert article.title == "О встрече А.Ю.Руденко"
    assert article.canonical_url == "https://mid.ru/ru/foreign_policy/news/1990001/"
    assert article.published_at is None


def test_selector_wins() -> None:
    article = extract_article(PAGE.format(date=""), url=URL, selector="div.article-content")
    assert article.text.startswith("4 февраля") and "\n\nСтороны" in article.text


def test_selector_that_matches_nothing_falls_back() -> None:
    article = extract_article(PAGE.format(date=""), url=URL, selector="div.nothing-here")
    assert "СВМДА" in article.text


@pytest.mark.parametrize(
    "date",
    [
        '<meta property="article:published_time" content="2025-02-04T14:30:00+03:00">',
        '<meta itemprop="datePublished" content="2025-02-04T14:30:00+03:00">',
        '<script type="application/ld+json">{"@type":"NewsArticle","datePublished":"2025-02-04T14:30:00+03:00"}'
        "</script>",
        '<script type="application/ld+json">{"@graph":[{"@type":"WebPage"},'
        '{"@type":"NewsArticle","datePublished":"2025-02-04T14:30:00+03:00"}]}</script>',
    ],
)
def test_published_at(date: str) -> None:
    article = extract_article(PAGE.format(date=date), url=URL)
    assert article.published_at == datetime(2025, 2, 4, 11, 30, tzinfo=UTC)


def test_date_without_offset_uses_timezone() -> None:
    html = PAGE.format(date='<meta itemprop="datePublished" content="2025-02-04T14:30">')
    assert extract_article(html, url=URL, timezone="Europe/Moscow").published_at == \
        datetime(2025, 2, 4, 11, 30, tzinfo=UTC)


def test_title_falls_back_to_h1_and_canonical_must_be_http() -> None:
    html = PAGE.format(date="").replace('<meta property="og:title" content="О встрече А.Ю.Руденко">', "")
    html = html.replace('href="/ru/foreign_policy/news/1990001/"', 'href="javascript:alert(1)"')
    article = extract_article(html, url=URL)
    assert article.title == "Заголовок H1"
    assert article.canonical_url is None


@pytest.mark.parametrize("html", ["", "   ", "<html></html>", "not html at all", "<div>" * 5000])
def test_junk_pages(html: str) -> None:
    article = extract_article(html, url="https://x.org/a")
    assert isinstance(article.text, str) and isinstance(article.title, str)


def test_entities_in_doctype_are_not_expanded() -> None:
    html = ('<!DOCTYPE html [<!ENTITY a "' + "Z" * 1000 + '">]><html><body><p>' + "&a;" * 1000 +
            "</p></body></html>")
    article = extract_article(html, url="https://x.org/a")
    assert "ZZZZ" not in article.text
