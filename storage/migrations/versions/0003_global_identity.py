"""one canonical URL is one item, whichever sources carry it

Items were identified per source, so one article listed by two feeds of a ministry was two
items. Now the canonical URL identifies an item across sources (``uq_items_url``); the sources
that carry it, each with its GUID (the second key, per source), what it last said of the item
and its entry's fingerprint, are rows of ``item_sources``.

Existing duplicates (one canonical URL in several sources) are merged into the oldest item:
the others' versions join its history (before its current version, which stays current, so
its text, matches and search row stay consistent), their organisations' matches are kept, their
sources become its sources, alert events point at it, and a missing story is taken over. Nothing
delivered is dropped: alert keys belong to stories, which stay.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "item_sources",
        sa.Column("id", Key, autoincrement=True, nullable=False),
        sa.Column("item_id", Key, nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("guid_key", sa.String(length=64), nullable=True),
        sa.Column("content_hash", sa.String(length=80), nullable=True),
        sa.Column("entry_hash", sa.String(length=80), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_item_sources_item_id_items"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"],
                                name=op.f("fk_item_sources_source_id_sources"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_item_sources")),
        sa.UniqueConstraint("item_id", "source_id", name="uq_item_sources_item_source"),
    )
    op.execute("INSERT INTO item_sources (item_id, source_id, guid_key, content_hash, first_seen_at) "
               "SELECT id, source_id, guid_key, content_hash, first_seen_at FROM items ORDER BY id")
    _merge_duplicates(op.get_bind())
    op.create_index("uq_item_sources_source_guid", "item_sources", ["source_id", "guid_key"], unique=True,
                    sqlite_where=sa.text("guid_key IS NOT NULL"),
                    postgresql_where=sa.text("guid_key IS NOT NULL"))
    op.create_index("ix_item_sources_source_seen", "item_sources", ["source_id", "first_seen_at", "item_id"])
    op.drop_index("uq_items_source_guid", table_name="items")
    op.create_index("uq_items_url", "items", ["url_key"], unique=True)


def _merge_duplicates(bind: sa.Connection) -> None:
    groups = bind.execute(sa.text(
        "SELECT url_key FROM items GROUP BY url_key HAVING COUNT(*) > 1")).scalars().all()
    for url_key in groups:
        ids = bind.execute(sa.text("SELECT id FROM items WHERE url_key = :k ORDER BY id"),
                           {"k": url_key}).scalars().all()
        keeper, others = ids[0], ids[1:]
        for other in others:
            _merge(bind, keeper, other)


def _merge(bind: sa.Connection, keeper: int, other: int) -> None:
    params = {"keeper": keeper, "other": other}
    # Versions: the other item's history first, the keeper's current version last.
    current = bind.execute(sa.text("SELECT version FROM items WHERE id = :keeper"), params).scalar_one()
    rows = bind.execute(sa.text(
        "SELECT id, item_id, version, fetched_at FROM item_versions WHERE item_id IN (:keeper, :other)"),
        params).all()
    ordered = sorted(rows, key=lambda r: (r.item_id == keeper and r.version == current, r.fetched_at, r.id))
    # out of the way of uq_item_versions_item_version while renumbering
    bind.execute(sa.text("UPDATE item_versions SET version = -version - 1000000 "
                         "WHERE item_id IN (:keeper, :other)"), params)
    for number, row in enumerate(ordered, start=1):
        bind.execute(sa.text("UPDATE item_versions SET item_id = :keeper, version = :n WHERE id = :id"),
                     {"keeper": keeper, "n": number, "id": row.id})
    bind.execute(sa.text("UPDATE items SET version = :n WHERE id = :keeper"), {"n": len(ordered), **params})
    # The other item's organisations stay findable (its matches for organisations the keeper lacks).
    bind.execute(sa.text(
        "UPDATE matches SET item_id = :keeper WHERE item_id = :other AND organisation NOT IN "
        "(SELECT organisation FROM matches WHERE item_id = :keeper)"), params)
    bind.execute(sa.text(
        "UPDATE item_sources SET item_id = :keeper WHERE item_id = :other AND source_id NOT IN "
        "(SELECT source_id FROM item_sources WHERE item_id = :keeper)"), params)
    bind.execute(sa.text("UPDATE alert_outbox SET item_id = :keeper WHERE item_id = :other"), params)
    bind.execute(sa.text(
        "UPDATE items SET story_id = COALESCE(story_id, (SELECT story_id FROM items WHERE id = :other)), "
        "published_at = COALESCE(published_at, (SELECT published_at FROM items WHERE id = :other)), "
        "first_seen_at = (SELECT MIN(first_seen_at) FROM items WHERE id IN (:keeper, :other)) "
        "WHERE id = :keeper"), params)
    if bind.dialect.name == "sqlite":
        bind.execute(sa.text("DELETE FROM items_fts WHERE rowid = :other"), params)
    for table in ("matches", "story_bands", "item_signatures", "item_sources"):
        bind.execute(sa.text(f"DELETE FROM {table} WHERE item_id = :other"), params)
    bind.execute(sa.text("DELETE FROM items WHERE id = :other"), params)


def downgrade() -> None:
    op.drop_index("uq_items_url", table_name="items")
    op.create_index("uq_items_source_guid", "items", ["source_id", "guid_key"], unique=True,
                    sqlite_where=sa.text("guid_key IS NOT NULL"),
                    postgresql_where=sa.text("guid_key IS NOT NULL"))
    op.drop_index("ix_item_sources_source_seen", table_name="item_sources")
    op.drop_index("uq_item_sources_source_guid", table_name="item_sources")
    op.drop_table("item_sources")
