"""Configuration: ``newsmon.toml`` plus NEWSMON_* overrides, validated once into immutable
objects. The only module that reads the environment or the configuration file."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from crawler.organisations import OrganisationSpec, with_builtin_defaults
from crawler.sources import CrawlSettings, Frozen, SourceSpec, check_http_url
from crawler.units import Duration
from scheduler.errors import ConfigError
from storage.repository import DEFAULT_MIN_CONFIDENCE

DEFAULT_DATABASE_URL = "sqlite:///data/newsmon.db"
DEFAULT_CONFIG_NAME = "newsmon.toml"


class StorageSettings(Frozen):
    url: str = DEFAULT_DATABASE_URL
    # Files the crawl keeps between rounds (the alias words' morphology); "" keeps none.
    # Unset: default_cache_dir() of the environment.
    cache_dir: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", value):
            raise ValueError(f"{value!r} is not a sqlite:/// or postgresql:// URL")
        return value


class AlertSpec(Frozen):
    """One ``[[alerts]]`` channel: a webhook, an Apprise URL, or the log (one INFO line per
    match on the daemon's stderr; the built-in channel when no ``[[alerts]]`` is configured)."""

    kind: Literal["webhook", "apprise", "log"]
    url: str = ""
    id: str | None = None
    organisations: tuple[str, ...] | None = None
    mode: Literal["instant", "digest"] = "instant"
    schedule: str | None = None
    max_age: Duration = 2 * 86400.0
    # Alert only matches at least this sure (1.0 names and safe acronyms; an ambiguous acronym
    # 0.95 with another alias, 0.9/0.8 with context, 0.7 near another organisation, 0.6 only
    # from a foreign-affairs source).
    min_confidence: float = Field(default=DEFAULT_MIN_CONFIDENCE, ge=0.0, le=1.0)
    secret: str | None = None
    timeout: Duration = 10.0
    headers: dict[str, str] = Field(default_factory=dict)
    allow_private: bool = True  # the operator chose this target (DESIGN example: a loopback webhook)
    # What the channel receives: new matches, and edits and removals of matching items.
    events: tuple[Literal["match", "edit", "removed"], ...] = ("match",)
    # Narrower: only items of these sources, only items the search query finds.
    sources: tuple[str, ...] | None = None
    query: str | None = None

    @field_validator("events")
    @classmethod
    def _events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError('needs at least one of "match", "edit", "removed"')
        return tuple(dict.fromkeys(value))

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        from storage.search import parse_query

        if value is not None and parse_query(value).empty:
            raise ValueError(f"{value!r} has no words to search for")
        return value

    @model_validator(mode="after")
    def _check(self) -> AlertSpec:
        if self.kind == "log":
            if self.url:
                raise ValueError("a log channel takes no url (it prints each match in the log)")
        elif not self.url:
            raise ValueError(f"a {self.kind} channel needs a url")
        if self.kind == "webhook":
            check_http_url(self.url)
        if self.mode == "digest":
            if not self.schedule:
                raise ValueError("a digest channel needs a cron `schedule`, e.g. \"0 9 * * *\"")
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.schedule)
            except ValueError as exc:
                raise ValueError(f"schedule {self.schedule!r} is not a cron expression: {exc}") from None
        return self

    @property
    def channel_id(self) -> str:
        """A stable id: the configured one, else derived from the kind and URL."""
        if self.id:
            return self.id
        if self.kind == "log":
            return "log"
        import hashlib

        return f"{self.kind}-{hashlib.sha256(self.url.encode()).hexdigest()[:12]}"


BUILTIN_LOG_CHANNEL = AlertSpec(kind="log")
"""The channel of a configuration without ``[[alerts]]``: new matches are printed in the log."""


class ServerSettings(Frozen):
    """The web page and API: served by `newsmon serve`, and by `newsmon run` unless
    ``enabled = false`` (or ``--no-serve``)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port (the start line says which)
    api_token: str | None = None
    # Where people reach `newsmon serve` (alerts link to item pages there); default host:port.
    public_url: str | None = None

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return check_http_url(value) if value is not None else None

    @property
    def site_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class DaemonSettings(Frozen):
    tick: Duration = 1.0
    round_timeout: Duration = 300.0
    lease: Duration = 120.0
    batch_size: int = Field(default=200, ge=1)
    dispatch_interval: Duration = 2.0
    max_attempts: int = Field(default=20, ge=1)
    retry_cap: Duration = 3600.0
    fetch_log_keep: Duration = 90 * 86400.0


class AppConfig(Frozen):
    """The whole configuration, after defaults and overrides."""

    storage: StorageSettings = StorageSettings()
    crawl: CrawlSettings = CrawlSettings()
    daemon: DaemonSettings = DaemonSettings()
    server: ServerSettings = ServerSettings()
    sources: tuple[SourceSpec, ...] = ()
    organisations: tuple[OrganisationSpec, ...] = ()
    alerts: tuple[AlertSpec, ...] = (BUILTIN_LOG_CHANNEL,)

    @field_validator("alerts")
    @classmethod
    def _builtin_log(cls, value: tuple[AlertSpec, ...]) -> tuple[AlertSpec, ...]:
        return value or (BUILTIN_LOG_CHANNEL,)

    @field_validator("organisations")
    @classmethod
    def _builtin_defaults(cls, value: tuple[OrganisationSpec, ...]) -> tuple[OrganisationSpec, ...]:
        return tuple(with_builtin_defaults(list(value)))

    @model_validator(mode="after")
    def _unique(self) -> AppConfig:
        _no_duplicates("sources", [s.id for s in self.sources])
        _no_duplicates("organisations", [o.id for o in self.organisations])
        _no_duplicates("alerts", [a.channel_id for a in self.alerts])
        known = {o.id for o in self.organisations}
        for index, alert in enumerate(self.alerts):
            for org in alert.organisations or ():
                if org not in known:
                    raise ValueError(f"alerts[{index}].organisations: unknown organisation {org!r}")
            sources = {s.id for s in self.sources}
            for source in alert.sources or ():
                if source not in sources:
                    raise ValueError(f"alerts[{index}].sources: unknown source {source!r}")
        return self

    def source(self, source_id: str) -> SourceSpec | None:
        return next((s for s in self.sources if s.id == source_id), None)


def _no_duplicates(table: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for index, value in enumerate(ids):
        if value in seen:
            raise ValueError(f"{table}[{index}].id: duplicate id {value!r}")
        seen.add(value)


@dataclass(frozen=True)
class LoadedConfig:
    config: AppConfig
    path: Path | None  # None: built-in defaults


def config_path(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """--config, else $NEWSMON_CONFIG, else ./newsmon.toml when it exists, else None."""
    if explicit:
        return Path(explicit)
    if environ.get("NEWSMON_CONFIG"):
        return Path(environ["NEWSMON_CONFIG"])
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.exists() else None


def load_config(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, merge and validate the configuration; raises ConfigError naming the key."""
    environ = os.environ if environ is None else environ
    path = config_path(explicit, environ)
    raw: dict[str, Any] = {}
    text = ""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(str(path), "", "no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), "", f"cannot read: {exc}") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            found = re.search(r"at line (\d+)", str(exc))
            line = int(found.group(1)) if found else None
            raise ConfigError(str(path), "", f"not valid TOML: {exc}", line) from None
    return LoadedConfig(build_config(raw, environ, str(path or "<defaults>"), text), path)


def default_cache_dir(environ: Mapping[str, str]) -> str | None:
    """systemd's ``$CACHE_DIRECTORY`` (``CacheDirectory=``), else ``$XDG_CACHE_HOME/newsmon``,
    else ``~/.cache/newsmon``; None without any of them."""
    if environ.get("CACHE_DIRECTORY"):
        return environ["CACHE_DIRECTORY"].split(":")[0]
    xdg = environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return os.path.join(xdg, "newsmon")
    home = environ.get("HOME", "")
    return os.path.join(home, ".cache", "newsmon") if os.path.isabs(home) else None


def build_config(raw: dict[str, Any], environ: Mapping[str, str], name: str = "<config>",
                 text: str = "") -> AppConfig:
    raw = dict(raw)
    if environ.get("NEWSMON_DATABASE_URL"):
        raw["storage"] = {**raw.get("storage", {}), "url": environ["NEWSMON_DATABASE_URL"]}
    storage = raw.get("storage", {})
    if isinstance(storage, dict) and storage.get("cache_dir") is None:
        raw["storage"] = {**storage, "cache_dir": default_cache_dir(environ)}
    if not raw.get("sources"):
        from crawler.catalogue import builtin_sources

        raw["sources"] = [s.model_dump(exclude_defaults=True) for s in builtin_sources()]
    if not raw.get("organisations"):
        from crawler.organisations import builtin_organisations

        raw["organisations"] = [o.model_dump(exclude_defaults=True) for o in builtin_organisations()]
    try:
        return AppConfig.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = _dotted(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        if key == "" and (m := re.match(r"^([\w]+\[\d+\](?:\.\w+)*): (.*)$", message)):
            key, message = m.group(1), m.group(2)
        if key == "storage.url" and environ.get("NEWSMON_DATABASE_URL"):
            raise ConfigError("NEWSMON_DATABASE_URL", "", message) from None
        raise ConfigError(name, key, message, _line_of(text, _loc(key))) from None


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("function-after", "function-before") and not str(part).startswith("function-"):
            out += ("." if out else "") + str(part)
    return out


def _loc(key: str) -> tuple[int | str, ...]:
    """``sources[1].id`` → ("sources", 1, "id")."""
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", key))


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Best effort: the line of the key named by ``loc`` in the TOML text."""
    if not text or not loc:
        return None
    lines = text.splitlines()
    start, end = 0, len(lines)
    parts = [p for p in loc if not str(p).startswith("function-")]
    table = str(parts[0])
    if len(parts) > 1 and isinstance(parts[1], int):
        headers = [i for i, ln in enumerate(lines) if ln.strip() == f"[[{table}]]"]
        if parts[1] < len(headers):
            start = headers[parts[1]]
            end = next((i for i in range(start + 1, len(lines))
                        if lines[i].strip().startswith("[[")), len(lines))
        key = str(parts[2]) if len(parts) > 2 else None
    else:
        header = next((i for i, ln in enumerate(lines) if ln.strip() == f"[{table}]"), None)
        if header is not None:
            start = header
        key = str(parts[1]) if len(parts) > 1 else table
    if key is None:
        return start + 1
    for i in range(start, end):
        if re.match(rf"^\s*{re.escape(key)}\s*=", lines[i]):
            return i + 1
    return start + 1 if start else None
