"""The migrations build exactly the schema the models describe, on both backends; each one
upgrades in one transaction and its downgrade undoes it."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from storage.db import _alembic_config, is_current, make_engine, upgrade
from storage.errors import DatabaseError
from storage.models import Base


def test_migrated_schema_matches_the_models(engine):
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    # the full-text tables are created by hand (FTS5 / tsvector) and are not models; nor are the
    # fetch log's partitions on PostgreSQL (storage/partitions.py)
    hand_made = ("items_fts", "items_search", "fetch_log_default", "fetch_log_p2")
    diff = [d for d in diff if not any(name in str(d) for name in hand_made)]
    assert diff == []


def test_upgrade_is_idempotent_and_reports_current(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'new.db'}")
    assert not is_current(engine)
    upgrade(engine)
    upgrade(engine)
    assert is_current(engine)


def downgrade(engine, revision: str) -> None:
    with engine.begin() as connection:
        config = _alembic_config(engine)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _indexes(engine, table: str) -> set[str]:
    with engine.connect() as connection:
        return {ix["name"] for ix in inspect(connection).get_indexes(table)}


def _tables(engine) -> set[str]:
    with engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def _revision(engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_0002_adds_the_prune_indexes_and_its_downgrade_drops_them(new_database):
    engine = make_engine(new_database())
    try:
        upgrade(engine, "0001")
        assert _revision(engine) == "0001" and not is_current(engine)
        assert "ix_fetch_log_started" not in _indexes(engine, "fetch_log")
        upgrade(engine)
        assert is_current(engine)
        assert "ix_fetch_log_started" in _indexes(engine, "fetch_log")
        assert "ix_story_bands_seen" in _indexes(engine, "story_bands")
        downgrade(engine, "0001")
        assert _revision(engine) == "0001"
        assert "ix_fetch_log_started" not in _indexes(engine, "fetch_log")
        assert "ix_story_bands_seen" not in _indexes(engine, "story_bands")
    finally:
        engine.dispose()


def test_a_migration_that_fails_half_way_leaves_the_old_schema(new_database):
    """Each upgrade is one transaction, on SQLite too: the 0002 that fails on its second index
    leaves no first index behind, and a first migration that fails leaves no tables."""
    engine = make_engine(new_database())
    try:
        upgrade(engine, "0001")
        with engine.begin() as connection:  # squats the name of 0002's second index
            connection.execute(text("CREATE INDEX ix_story_bands_seen ON items (title)"))
        with pytest.raises(DatabaseError, match="cannot open or migrate"):
            upgrade(engine)
        assert _revision(engine) == "0001"
        assert "ix_fetch_log_started" not in _indexes(engine, "fetch_log")
    finally:
        engine.dispose()
    engine = make_engine(new_database())
    try:
        with engine.begin() as connection:  # squats a table the first migration creates late
            connection.execute(text("CREATE TABLE story_bands (id INTEGER PRIMARY KEY)"))
        with pytest.raises(DatabaseError, match="cannot open or migrate"):
            upgrade(engine)
        assert _tables(engine) == {"story_bands"}
        upgrade_after_repair(engine)
    finally:
        engine.dispose()


def upgrade_after_repair(engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE story_bands"))
    upgrade(engine)
    assert is_current(engine)
