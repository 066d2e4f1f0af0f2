"""What every command gets: the loaded configuration and an opened, migrated database."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import NoReturn

import click
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import AppConfig, LoadedConfig, load_config
from scheduler.errors import ConfigError
from storage.errors import DatabaseError


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear line on stderr and exit with ``code`` (1 failed, 2 bad usage/config)."""
    click.echo(f"newsmon: {message}", err=True)
    sys.exit(code)


@dataclass
class AppContext:
    config_path: str | None
    log_level: str = "INFO"
    log_json: bool = False
    _loaded: LoadedConfig | None = field(default=None, repr=False)

    @property
    def loaded(self) -> LoadedConfig:
        if self._loaded is None:
            try:
                self._loaded = load_config(self.config_path)
            except ConfigError as exc:
                fail(str(exc), 2)
        return self._loaded

    @property
    def config(self) -> AppConfig:
        return self.loaded.config

    @cached_property
    def engine(self) -> Engine:
        """The database, migrated to the newest schema (migrations run at start-up)."""
        from storage.db import make_engine, upgrade

        try:
            engine = make_engine(self.config.storage.url)
            upgrade(engine)
        except DatabaseError as exc:
            fail(f"{self.config.storage.url}: {exc}", 1)
        return engine

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        from storage.db import make_session_factory

        return make_session_factory(self.engine)


pass_app = click.make_pass_decorator(AppContext)
