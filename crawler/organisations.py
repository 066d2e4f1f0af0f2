"""Tracked organisations: the ``[[organisations]]`` spec and the built-in catalogue."""

from __future__ import annotations

import functools
import re
import tomllib
from importlib import resources
from typing import Any

from pydantic import field_validator, model_validator

from crawler.sources import Frozen

ORGANISATION_ID = re.compile(r"^[A-Za-z0-9_-]+$")
LANGUAGE = re.compile(r"^[A-Za-z]{2,3}$")
CATALOGUE = "organisations.toml"


class OrganisationSpec(Frozen):
    """One ``[[organisations]]`` entry: an id, a display name, aliases and veto phrases.

    An all-capitals alias (``CICA``, ``СВМДА``) is an acronym: it matches only in capitals
    and as a whole word. Any other alias matches case-insensitively in every grammatical
    case. An ``exclude`` phrase found in the same sentence vetoes this organisation's match.

    An acronym is *ambiguous* (SCO is also a Unix vendor, ОДКБ a children's hospital) unless
    listed in ``safe``: it counts only with evidence — another alias of the organisation in
    the item, a ``context`` phrase near it, another tracked organisation near it, or (weaker)
    a foreign-affairs source. ``languages`` limits an alias to texts in those languages
    (``{"ОТГ" = ["ru"]}``).
    """

    id: str
    name: str = ""
    aliases: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    context: tuple[str, ...] = ()
    safe: tuple[str, ...] = ()
    languages: dict[str, tuple[str, ...]] = {}

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

    @field_validator("context")
    @classmethod
    def _context(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _phrases(value, "context phrase")

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        cleaned: dict[str, tuple[str, ...]] = {}
        for alias, codes in value.items():
            if not codes or not all(LANGUAGE.match(code) for code in codes):
                raise ValueError(f"languages of {alias!r}: give language codes like \"ru\", \"az\"")
            cleaned[" ".join(alias.split())] = tuple(code.lower() for code in codes)
        return cleaned

    @model_validator(mode="after")
    def _known_aliases(self) -> OrganisationSpec:
        for what, names in (("safe", self.safe), ("languages", tuple(self.languages))):
            unknown = [name for name in names if name not in self.aliases]
            if unknown:
                raise ValueError(f"{what}: {', '.join(map(repr, unknown))} not among the aliases")
        return self

    def is_safe(self, alias: str) -> bool:
        """Whether a match of this alias counts without evidence (every non-acronym does)."""
        return alias in self.safe or not is_acronym(alias)

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


def is_acronym(phrase: str) -> bool:
    """An all-capitals alias (CICA, СВМДА, İƏT): matched in capitals, as whole words."""
    return phrase == phrase.upper() and phrase != phrase.lower()


def load_organisations(document: dict[str, Any], *, inherit: bool = True) -> list[OrganisationSpec]:
    """Build specs from a parsed TOML document's ``organisations`` array; ids must be unique.

    With ``inherit``, an organisation whose id is in the built-in catalogue and that sets none
    of ``context``, ``safe`` and ``languages`` takes the catalogue's (for the aliases it has),
    so a ``newsmon.toml`` written before those keys existed keeps matching its safe acronyms
    and gets the built-in context.
    """
    specs = [OrganisationSpec.model_validate(table) for table in document.get("organisations", [])]
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            raise ValueError(f"organisation id {spec.id!r} is defined twice")
        seen.add(spec.id)
    return with_builtin_defaults(specs) if inherit else specs


def with_builtin_defaults(specs: list[OrganisationSpec]) -> list[OrganisationSpec]:
    """Each spec with a built-in id that sets none of ``context``, ``safe`` and ``languages``
    takes the catalogue's (for the aliases it has)."""
    builtin = {spec.id: spec for spec in builtin_organisations()}
    return [_inherited(spec, builtin[spec.id]) if spec.id in builtin else spec for spec in specs]


def _inherited(spec: OrganisationSpec, builtin: OrganisationSpec) -> OrganisationSpec:
    if spec.model_fields_set & {"context", "safe", "languages"}:
        return spec
    return spec.model_copy(update={
        "context": builtin.context,
        "safe": tuple(alias for alias in builtin.safe if alias in spec.aliases),
        "languages": {alias: codes for alias, codes in builtin.languages.items() if alias in spec.aliases},
    })


def builtin_organisations() -> list[OrganisationSpec]:
    """The organisations shipped in ``crawler/data/organisations.toml``."""
    return list(_builtin())


@functools.cache
def _builtin() -> tuple[OrganisationSpec, ...]:
    text = (resources.files("crawler") / "data" / CATALOGUE).read_text(encoding="utf-8")
    return tuple(load_organisations(tomllib.loads(text), inherit=False))
