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


@pytest.mark.parametrize(("extra", "key", "words"), [
    ('[server]\nenabeld = false\n', "server.enabeld", "unknown key"),
    ('[server]\nenabled = "sometimes"\n', "server.enabled", "boolean"),
    ('[server]\nport = 70000\n', "server.port", "65535"),
    ('[[alerts]]\nkind = "log"\nurl = "http://127.0.0.1/x"\n', "alerts[1]", "takes no url"),
    ('[[alerts]]\nkind = "apprise"\n', "alerts[1]", "needs a url"),
    ('[[alerts]]\nkind = "sms"\nurl = "x"\n', "alerts[1].kind", "'log'"),
])
def test_server_and_alert_keys_are_checked(tmp_path, extra, key, words):
    path = write(tmp_path, BASE + extra)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={})
    assert info.value.key == key and words in info.value.message, info.value
    result = CliRunner().invoke(cli, ["--config", str(path), "run"])
    assert result.exit_code == 2 and key in result.output and "Traceback" not in result.output


def test_no_alerts_means_the_builtin_log_channel_and_serving_is_on_by_default(tmp_path):
    without = BASE[:BASE.index("[[alerts]]")]
    config = load_config(str(write(tmp_path, without)), environ={}).config
    assert [(a.kind, a.channel_id) for a in config.alerts] == [("log", "log")]
    assert config.server.enabled and (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    both = load_config(str(write(tmp_path, BASE + '[[alerts]]\nkind = "log"\n[server]\nenabled = false\n')),
                       environ={}).config
    assert [a.kind for a in both.alerts] == ["webhook", "log"] and not both.server.enabled


def test_starter_file_has_working_commented_alert_examples(tmp_path):
    """`newsmon init`'s file: no [[alerts]] (the built-in log channel); its commented webhook and
    Apprise examples load as they are once uncommented."""
    from scheduler.commands.setup import starter_config

    text = starter_config().replace('url = "sqlite:///data/newsmon.db"', f'url = "sqlite:///{tmp_path / "x.db"}"')
    assert [a.kind for a in load_config(str(write(tmp_path, text)), environ={}).config.alerts] == ["log"]
    block = text[text.index("# [[alerts]]\n# kind = \"log\""):text.index("\n\n", text.index("# [[alerts]]"))]
    uncommented = "\n".join(line[2:].split("  #")[0] for line in block.splitlines())
    alerts = load_config(str(write(tmp_path, text + "\n" + uncommented + "\n")), environ={}).config.alerts
    assert [a.kind for a in alerts] == ["log", "webhook", "apprise"]
    assert alerts[2].mode == "digest" and alerts[1].organisations == ("CICA",)
