"""Tests for crawler.text: HTML to plain text, normalisation and content hashes."""

from __future__ import annotations

import pytest

from crawler.text import clean_text, content_hash, html_to_text


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        ("<p>Hello&nbsp;<b>world</b></p><p>Next</p>", "Hello world\n\nNext"),
        ("line one<br>line two", "line one\nline two"),
        ("<ul><li>a</li><li>b</li></ul>", "a\nb"),
        ("<table><tr><td>a</td><td>b</td></tr></table>", "a b"),
        ("<p>x</p><script>alert(1)</script><style>p{}</style><!-- c -->", "x"),
        ("&laquo;СВМДА&raquo; &amp; CICA", "«СВМДА» & CICA"),
        ("Со\u00adвещание", "Совещание"),
        ("a < b and c > d", "a < b and c > d"),
        ("", ""),
        ("<?xml version='1.0' encoding='utf-8'?><p>ok</p>", "ok"),
        ("<div>  many   spaces \t here </div>", "many spaces here"),
    ],
)
def test_html_to_text(markup: str, expected: str) -> None:
    assert html_to_text(markup) == expected


def test_html_to_text_nfc_and_controls() -> None:
    assert html_to_text("<p>e\u0301\x00\x07</p>") == "\u00e9"


def test_deep_nesting_does_not_crash() -> None:
    assert html_to_text("<div>" * 20000 + "deep" + "</div>" * 20000) == "deep"


def test_clean_text_keeps_paragraphs() -> None:
    assert clean_text(" a  b \r\n\r\n\r\n c\u200b ") == "a b\n\nc"


@pytest.mark.parametrize("space", ["\t", "\u00a0", "\u2028", "\u3000", "\u1680", "\u2009", "\u202f", "  "])
def test_clean_text_makes_every_other_space_one_space(space: str) -> None:
    # A single odd space character among single spaces: the fast path must not skip it.
    assert clean_text(f"СВМДА встреча{space}в Астане\nвторая строка") == "СВМДА встреча в Астане\nвторая строка"
    assert html_to_text(f"<p>СВМДА{space}встреча</p>") == "СВМДА встреча"


def test_content_hash_ignores_whitespace_and_case() -> None:
    first = content_hash("СВМДА  встреча", "<not html> text\n\n here")
    assert first.startswith("sha256:") and len(first) == 7 + 64
    assert first == content_hash(" свмда встреча ", "<not html> TEXT here")
    assert first != content_hash("СВМДА встреча", "other text")


@pytest.mark.parametrize("title, text", [
    ("СВМДА  встреча\u00ad", " <not html>\u200b text\r\n\r\n\r\n here\t"),
    ("Caf\u0065\u0301 ﬁnal", "Ёлка\x07 \u00a0 x"),
])
def test_the_hash_of_cleaned_text_is_the_hash_of_the_raw_text(title: str, text: str) -> None:
    assert content_hash(clean_text(title), clean_text(text), cleaned=True) == content_hash(title, text)
