"""Tests for crawler.encoding: HTML/JSON bodies in windows-1251, KOI8-R and UTF-8, declared or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawler.encoding import body_encoding, decode_body

FAULTS = Path(__file__).parent / "data" / "faults"
TEXT = ("<html><body><p>Совещание по взаимодействию и мерам доверия в Азии (СВМДА) провело "
        "встречу министров иностранных дел государств-членов.</p></body></html>")


@pytest.mark.parametrize("codec", ["windows-1251", "koi8-r", "utf-8"])
@pytest.mark.parametrize("header", ["none", "no charset", "right charset", "lying utf-8"])
def test_russian_comes_out_right_whatever_the_header(codec: str, header: str) -> None:
    content_type = {"none": None, "no charset": "text/html",
                    "right charset": f"text/html; charset={codec}",
                    "lying utf-8": "text/html; charset=utf-8"}[header]
    assert decode_body(TEXT.encode(codec), content_type=content_type) == TEXT


def test_legacy_header_on_utf8_bytes_is_not_believed() -> None:
    assert decode_body(TEXT.encode("utf-8"), content_type="text/html; charset=windows-1251") == TEXT


def test_override_wins() -> None:
    body = TEXT.encode("koi8-r")
    assert body_encoding(body, content_type="text/html; charset=utf-8", override="koi8-r") == "koi8-r"


def test_bom_wins_over_header() -> None:
    body = b"\xef\xbb\xbf" + TEXT.encode("utf-8")
    assert decode_body(body, content_type="text/html; charset=windows-1251") == TEXT


def test_meta_charset() -> None:
    body = ('<html><head><meta charset="windows-1251"></head><body>Сарыбай</body></html>'
            ).encode("cp1251")
    assert body_encoding(body, content_type="text/html") == "cp1251"
    assert "Сарыбай" in decode_body(body, content_type=None)


def test_http_equiv() -> None:
    body = ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=koi8-r">'
            "</head><body>Сарыбай</body></html>").encode("koi8-r")
    assert "Сарыбай" in decode_body(body, content_type=None)


def test_koi8r_page_without_any_declaration() -> None:
    text = decode_body((FAULTS / "page_koi8r.html").read_bytes(), content_type="text/html")
    assert "Генеральный секретарь СВМДА" in text


def test_json_ignores_meta_inside_strings() -> None:
    body = '{"body": "<meta charset=\\"koi8-r\\">Привет"}'.encode()
    assert "Привет" in decode_body(body, content_type="application/json")


def test_never_raises_on_garbage() -> None:
    assert isinstance(decode_body(b"\xff\xfe\x00\xd8garbage\x80", content_type="text/html; charset=bogus"),
                      str)
    assert decode_body(b"", content_type=None) == ""
