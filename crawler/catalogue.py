"""The built-in source catalogue: ``crawler/data/sources.toml`` loaded into ``SourceSpec``."""

from __future__ import annotations

import tomllib
from importlib import resources

from crawler.sources import SourceSpec

CATALOGUE = "sources.toml"


def catalogue_text() -> str:
    """The commented TOML of the built-in sources (users copy tables from it)."""
    return (resources.files("crawler") / "data" / CATALOGUE).read_text(encoding="utf-8")


def builtin_sources() -> list[SourceSpec]:
    """The sources shipped with newsmon (shared/catalogue/SOURCES.md), validated."""
    raw = tomllib.loads(catalogue_text())
    return [SourceSpec.model_validate(table) for table in raw.get("sources", [])]
