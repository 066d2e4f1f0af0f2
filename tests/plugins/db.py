"""Database fixtures: a migrated SQLite file per test, and a migrated PostgreSQL database per
test when NEWSMON_TEST_PG_URL names a server (CI always does; locally it is optional)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, make_session_factory, upgrade

PG_ENV = "NEWSMON_TEST_PG_URL"
TEMPLATE = "newsmon_test_template"


def pg_server_url() -> str | None:
    return os.environ.get(PG_ENV) or None


@pytest.fixture(scope="session")
def pg_template() -> str | None:
    """A migrated template database, copied for each test (CREATE DATABASE … TEMPLATE)."""
    url = pg_server_url()
    if url is None:
        return None
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEMPLATE}"'))
        conn.execute(text(f'CREATE DATABASE "{TEMPLATE}"'))
    engine = make_engine(make_url(url).set(database=TEMPLATE).render_as_string(hide_password=False))
    upgrade(engine)
    engine.dispose()
    admin.dispose()
    return TEMPLATE


def _new_pg_database(template: str | None) -> str:
    """A new database copied from ``template``; an empty one (no tables) when None."""
    url = pg_server_url()
    assert url is not None
    name = f"newsmon_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(db_url: str) -> None:
    url = pg_server_url()
    assert url is not None
    name = make_url(db_url).database
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path, pg_template: str | None) -> Iterator[str]:
    """A migrated database URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'newsmon.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    yield from _fresh_pg_database(pg_template)


def _fresh_pg_database(pg_template: str | None) -> Iterator[str]:
    """A fresh migrated PostgreSQL database, dropped afterwards; CI must have a server."""
    if pg_template is None:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set: CI must run the PostgreSQL tests")
        pytest.skip(f"{PG_ENV} not set")
    url = _new_pg_database(pg_template)
    yield url
    _drop_pg_database(url)


def require_pg_server() -> None:
    """Skip without a PostgreSQL server (fail on CI, which must have one)."""
    if pg_server_url() is None:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set: CI must run the PostgreSQL tests")
        pytest.skip(f"{PG_ENV} not set")


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[[], str]]:
    """Makes URLs of new, empty (never migrated) databases, once for SQLite and once for
    PostgreSQL; the PostgreSQL ones are dropped afterwards."""
    backend = request.param
    made: list[str] = []

    def make() -> str:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / f'new-{len(made)}' / 'newsmon.db'}"
        else:
            require_pg_server()
            url = _new_pg_database(None)
        made.append(url)
        return url

    yield make
    for url in made:
        if url.startswith("postgresql"):
            _drop_pg_database(url)


@pytest.fixture
def pg_url(pg_template: str | None) -> Iterator[str]:
    """A fresh migrated PostgreSQL database (no SQLite variant)."""
    yield from _fresh_pg_database(pg_template)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'newsmon.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)
