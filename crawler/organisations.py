"""Tracked organisations: the ``[[organisations]]`` spec and the built-in catalogue."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from typing import Any

from pydantic import field_validator

from crawler.sources import Frozen

ORGANISATION_ID = re.compile(r"^[A-Za-z0-9_-]+$")
CATALOGUE = "organisations.toml"


class OrganisationSpec(Frozen):
    """One ``[[organisations]]`` entry: an id, a display name, aliases and veto phrases.

    An all-capitals alias (``CICA``, ``СВМДА``) is an acronym: it matches only in capitals
    and as a whole word. Any other alias matches case-insensitively in every grammatical
    case. An ``exclude`` phrase found in the same sentence vetoes this organisation's match.
    """

    id: str
    name: str = ""
    aliases: tuple[str, ...]
    exclude: tuple[str, ...] = ()

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ORGANISATION_ID.match(value):
            raise ValueError(f"{value!r} is not a valid id: use letters, digits, _ and -")
        return value

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("an organisation needs at least one alias")
        return _phrases(value, "alias")

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _phrases(value, "exclude phrase")

    @property
    def label(self) -> str:
        """The display name, or the id when no name is given."""
        return self.name or self.id


def _phrases(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Strip each phrase, refuse empty ones and drop repeats (keeping the first)."""
    cleaned: list[str] = []
    for value in values:
        phrase = " ".join(value.split())
        if not phrase:
            raise ValueError(f"an empty {what} is not allowed")
        if phrase not in cleaned:
            cleaned.append(phrase)
    return tuple(cleaned)


def load_organisations(document: dict[str, Any]) -> list[OrganisationSpec]:
    """Build specs from a parsed TOML document's ``organisations`` array; ids must be unique."""
    specs = [OrganisationSpec.model_validate(table) for table in document.get("organisations", [])]
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            raise ValueError(f"organisation id {spec.id!r} is defined twice")
        seen.add(spec.id)
    return specs


def builtin_organisations() -> list[OrganisationSpec]:
    """The organisations shipped in ``crawler/data/organisations.toml``."""
    text = (resources.files("crawler") / "data" / CATALOGUE).read_text(encoding="utf-8")
    return load_organisations(tomllib.loads(text))
