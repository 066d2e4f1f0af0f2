"""Engines, sessions and schema migrations for SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

import fcntl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import DatabaseError

MIGRATIONS = Path(__file__).with_name("migrations")

T = TypeVar("T")


def in_list(values: Iterable[T]) -> list[T]:
    """``values`` for an ``IN (…)`` whose length varies (a round's sources): padded to the next
    power of two by repeating the last value, which matches the same rows. An expanding ``IN``
    renders one placeholder per value, and every SQL text is a prepared statement of its own in
    each pooled connection's statement cache (pysqlite keeps 128; 20–60 KiB each with 50–250
    values): one text per list length made the daemon's RSS creep for hours. Padded, a list of up
    to 256 values has nine texts."""
    items = list(values)
    if items:
        items += [items[-1]] * ((1 << (len(items) - 1).bit_length()) - len(items))
    return items


def _sqlite_pragmas(cache_mib: int) -> Any:
    """The connect hook that configures every new SQLite connection."""
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed outbox row survives power loss too, not only a crash of the process.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute(f"PRAGMA cache_size=-{int(cache_mib) * 1024}")
        cursor.close()
    return apply


def _begin_immediate(engine: Engine) -> None:
    """Every transaction of ``engine`` starts with BEGIN IMMEDIATE (SQLAlchemy's pysqlite recipe:
    the driver's own deferred BEGIN, emitted only before the first write, is turned off)."""
    @event.listens_for(engine, "connect")
    def _no_driver_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# pg_advisory_xact_lock key of the crawl's write transactions ("nwsm" as an integer).
WRITE_LOCK_KEY = 0x6E77736D


def lock_writes(session: Session) -> None:
    """Make this transaction the only writer of items and stories until it ends, so the lookups
    it makes (is this item stored? which story has copies of it?) stay true until it commits:
    two crawl processes or workers storing copies of one story at once must not each start one.
    PostgreSQL: a transaction-level advisory lock. SQLite: the crawl's engine begins every
    transaction IMMEDIATE (``make_engine(..., sqlite_immediate=True)``), so nothing is needed."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})


def make_engine(url: str, *, sqlite_cache_mib: int = 2, sqlite_immediate: bool = False,
                **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys, a busy timeout, its directory and a
    page cache of ``sqlite_cache_mib`` per connection (SQLite's default 2 MiB keeps a long-running
    daemon small; a crawl round, which writes story bands and indexes, asks for more).

    :param sqlite_immediate: SQLite transactions take the write lock when they begin, before
        their first read (crawl processes: see ``lock_writes``).
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"{url!r} is not a database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"cannot create the directory of {database}: {exc.strerror}") from None
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas(sqlite_cache_mib))
        if sqlite_immediate:
            _begin_immediate(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)
    raise DatabaseError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


# pg_advisory_xact_lock key that serialises schema migrations ("nwmg"), apart from WRITE_LOCK_KEY.
MIGRATE_LOCK_KEY = 0x6E776D67


def migrate_lock_path(engine: Engine) -> Path | None:
    """``<database>.migrate.lock`` next to an SQLite file; None for PostgreSQL and in-memory
    databases (a private ``:memory:`` database has no one to race with)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).expanduser().resolve()
    return path.with_name(path.name + ".migrate.lock")


@contextmanager
def _flock(path: Path | None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (none when None), waited for; the kernel drops it if
    the process dies, so a crashed migration never leaves a stale lock."""
    if path is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every pending migration (up to ``revision``); idempotent and safe when several
    processes start at once on a new or outdated database.

    A current schema costs one cheap check and takes no lock. Otherwise the migration runs
    serialised, and re-checks what is left to do once it holds the lock, so a process that
    waited for another one's migration finds the schema current and does nothing:

    - SQLite: an exclusive ``flock`` on ``<database>.migrate.lock``, and the whole migration in
      one ``BEGIN IMMEDIATE`` transaction (SQLite's DDL is transactional, but Python's sqlite3
      otherwise runs each CREATE on its own), so a crash half-way leaves the old schema intact.
    - PostgreSQL: ``pg_advisory_xact_lock(MIGRATE_LOCK_KEY)`` in the migration's transaction,
      released by its commit, when the new schema becomes visible to the process that waited.
    """
    from alembic import command

    try:
        if revision == "head" and is_current(engine):
            return
        with _flock(migrate_lock_path(engine)), engine.connect() as connection:
            with _migration_transaction(connection):
                config = _alembic_config(engine)
                config.attributes["connection"] = connection
                command.upgrade(config, revision)  # reads the version under the lock
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseError(f"cannot open or migrate the database: {exc.orig}") from None
    except OSError as exc:
        raise DatabaseError(f"cannot lock the database for migrating: {exc}") from None


@contextmanager
def _migration_transaction(connection: Connection) -> Iterator[None]:
    """One transaction around the whole migration, holding the backend's migration lock."""
    if connection.dialect.name != "sqlite":
        with connection.begin():
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK_KEY})
            yield
        return
    raw = connection.connection.driver_connection
    assert raw is not None
    isolation = raw.isolation_level
    raw.isolation_level = None  # the driver's own BEGIN would come only before the first INSERT
    try:
        with connection.begin():
            if not raw.in_transaction:  # an engine made with sqlite_immediate=True has begun
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield
    finally:
        raw.isolation_level = isolation


def is_current(engine: Engine) -> bool:
    """True when the schema is at the newest migration."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(engine))
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        current = MigrationContext.configure(connection).get_current_heads()
    return set(current) == set(script.get_heads())
