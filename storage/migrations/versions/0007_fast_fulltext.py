"""fast full-text writes: SQLite's items_fts reads terms with FTS5's ``ascii`` tokenizer;
PostgreSQL compresses long texts and tsvectors with lz4

SQLite: ``unicode61 remove_diacritics 2`` spent two thirds of an items_fts insert classifying
and folding every character; the terms are lower-cased stems already, so the ``ascii``
tokenizer (spaces separate terms) reads them at a third of the cost, and the folding that
unicode61 did is done in Python (``storage.search.fts5_terms``) on the terms stored and queried.
Existing rows are copied into the new table folded, so every search finds what it found.

PostgreSQL (14 and later, when the server has lz4): items.text, item_versions.text and
items_search.terms are compressed with lz4 instead of pglz (a third of the server's time per
13 KB text); values stored before stay as they are, both are read alike.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_COMPRESSED = (("items", "text"), ("item_versions", "text"), ("items_search", "terms"))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        from storage.search import fts5_terms

        driver = op.get_bind().connection.driver_connection
        assert driver is not None
        driver.create_function("newsmon_fts5_terms", 1, fts5_terms, deterministic=True)
        _rebuild("ascii", "newsmon_fts5_terms(terms)")
    elif _has_lz4():
        _compress("lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild("unicode61 remove_diacritics 2", "terms")  # folded terms tokenize alike
    elif _has_lz4():
        _compress("pglz")


def _rebuild(tokenizer: str, terms: str) -> None:
    op.execute(f"CREATE VIRTUAL TABLE items_fts_new USING fts5(terms, tokenize = '{tokenizer}')")
    op.execute(f"INSERT INTO items_fts_new(rowid, terms) SELECT rowid, {terms} FROM items_fts")
    op.execute("DROP TABLE items_fts")
    op.execute("ALTER TABLE items_fts_new RENAME TO items_fts")


def _has_lz4() -> bool:
    """PostgreSQL 14+ built with lz4 (only then is it among the setting's values)."""
    return bool(op.get_bind().execute(sa.text(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")).scalar())


def _compress(method: str) -> None:
    for table, column in _COMPRESSED:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")
