"""Configuration: validation, the key named in errors, overrides, and the CLI's exit code 2."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from crawler.units import parse_duration, parse_size
from scheduler.cli import cli
from scheduler.config import ConfigError, load_config

BASE = """
[storage]
url = "sqlite:///{db}"

[crawl]
interval = "5m"

[[sources]]
id = "mid-ru"
url = "https://mid.ru/ru/rss.php"
language = "ru"

[[sources]]
id = "mfa-az-en"
kind = "html"
url = "https://mfa.gov.az/en/news"
[sources.selectors]
item = "a.section_newsIn_item"
link = "::attr(href)"
title = "div.section_newsIn_item_content--header::text"

[[organisations]]
id = "CICA"
aliases = ["CICA", "СВМДА"]

[[alerts]]
kind = "webhook"
url = "http://127.0.0.1:9000/hook"
organisations = ["CICA"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "newsmon.toml"
    path.write_text(textwrap.dedent(text).replace("{db}", str(tmp_path / "db.sqlite")), "utf-8")
    return path


def test_valid_file_loads_into_frozen_objects(tmp_path):
    loaded = load_config(str(write(tmp_path, BASE)), environ={})
    config = loaded.config
    assert config.crawl.interval == 300
    assert [s.id for s in config.sources] == ["mid-ru", "mfa-az-en"]
    assert config.sources[1].selectors.item == "a.section_newsIn_item"
    assert config.alerts[0].organisations == ("CICA",)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error
        config.crawl.interval = 1  # type: ignore[misc]


def test_database_url_override(tmp_path):
    config = load_config(str(write(tmp_path, BASE)),
                         environ={"NEWSMON_DATABASE_URL": "postgresql+psycopg://u@h/db"}).config
    assert config.storage.url == "postgresql+psycopg://u@h/db"


def test_config_env_names_the_file(tmp_path):
    path = write(tmp_path, BASE)
    assert load_config(None, environ={"NEWSMON_CONFIG": str(path)}).path == path


@pytest.mark.parametrize(("change", "key", "line"), [
    (('interval = "5m"', 'interval = "soon"'), "crawl.interval", 6),
    (('interval = "5m"', 'intervall = "5m"'), "crawl.intervall", 6),
    (('id = "mfa-az-en"', 'id = "MFA AZ"'), "sources[1].id", 14),
    (('id = "mfa-az-en"', 'id = "mid-ru"'), "sources[1].id", 14),
    (('url = "https://mid.ru/ru/rss.php"', 'url = "ftp://mid.ru/x"'), "sources[0].url", 10),
    (('organisations = ["CICA"]', 'organisations = ["NATO"]'), "alerts[0].organisations", None),
    (('kind = "html"', 'kind = "rss"'), "sources[1].kind", 15),
])
def test_bad_values_name_the_key(tmp_path, change, key, line):
    path = write(tmp_path, BASE.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={})
    assert info.value.key == key
    assert str(path) in str(info.value)
    if line is not None:
        assert info.value.line == line


def test_toml_syntax_error_gives_the_line(tmp_path):
    path = write(tmp_path, BASE + "\n[crawl\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={})
    assert info.value.line is not None and "TOML" in info.value.message


def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = write(tmp_path, BASE.replace('interval = "5m"', 'interval = "-1s"'))
    result = CliRunner().invoke(cli, ["--config", str(path), "search", "x"])
    assert result.exit_code == 2
    assert "crawl.interval" in result.output and str(path) in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "db.sqlite").exists()  # nothing written


def test_missing_config_file_is_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "nope.toml"), "search"])
    assert result.exit_code == 2 and "no such file" in result.output


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("2d", 172800), (15, 15)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "size"), [("10MB", 10_000_000), ("512KiB", 524288), (100, 100)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "5 parsecs", "-3s", True])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_bad_database_url_override_names_the_variable(tmp_path):
    result = CliRunner().invoke(cli, ["--config", str(write(tmp_path, BASE)), "search"],
                                env={"NEWSMON_DATABASE_URL": "mysql://x/y"})
    assert result.exit_code == 2 and "NEWSMON_DATABASE_URL" in result.output


@pytest.mark.parametrize("url", ["postgresql+psycopg://nobody@127.0.0.1:1/x", "sqlite:////proc/nope/x.db"])
def test_unreachable_database_is_one_line_and_exit_1(tmp_path, url):
    result = CliRunner().invoke(cli, ["--config", str(write(tmp_path, BASE)), "search"],
                                env={"NEWSMON_DATABASE_URL": url})
    assert result.exit_code == 1
    assert result.output.startswith("newsmon: ") and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2
