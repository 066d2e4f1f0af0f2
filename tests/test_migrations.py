"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from storage.db import is_current, make_engine, upgrade
from storage.models import Base


def test_migrated_schema_matches_the_models(engine):
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    # the full-text tables are created by hand (FTS5 / tsvector) and are not models
    diff = [d for d in diff if "items_fts" not in str(d) and "items_search" not in str(d)]
    assert diff == []


def test_upgrade_is_idempotent_and_reports_current(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'new.db'}")
    assert not is_current(engine)
    upgrade(engine)
    upgrade(engine)
    assert is_current(engine)
