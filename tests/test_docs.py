"""The README stays true: every command and every configuration key is documented in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from crawler.organisations import OrganisationSpec
from crawler.sources import CrawlSettings, JsonFields, Selectors, SourceSpec
from scheduler.cli import cli
from scheduler.config import AlertSpec, AppConfig, DaemonSettings, ServerSettings, StorageSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
TABLES: list[tuple[str, type[BaseModel]]] = [
    ("storage", StorageSettings), ("crawl", CrawlSettings), ("sources", SourceSpec),
    ("sources.selectors", Selectors), ("sources.fields", JsonFields),
    ("organisations", OrganisationSpec), ("alerts", AlertSpec), ("daemon", DaemonSettings),
    ("server", ServerSettings),
]


def test_make_commands_on_the_first_screen():
    first_screen = "\n".join(README.splitlines()[:40])
    assert "make run" in first_screen and "make test" in first_screen


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_is_documented(command):
    assert f"newsmon {command}" in README


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_has_help(command):
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize(("table", "key"), [(t, k) for t, m in TABLES for k in m.model_fields])
def test_every_config_key_is_documented(table, key):
    assert f"`{key}`" in README or f"`{table}.{key}`" in README, f"[{table}] {key} is not in README.md"


def test_every_top_level_table_is_documented():
    for table in AppConfig.model_fields:
        assert f"[{table}]" in README or f"[[{table}]]" in README


def test_every_built_in_source_is_listed():
    from crawler.catalogue import builtin_sources

    for spec in builtin_sources():
        assert f"| `{spec.id}` |" in README, f"built-in source {spec.id} is not listed in README.md"
