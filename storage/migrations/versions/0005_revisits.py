"""revisits: item pages fetched again on a schedule; removed items and versions

An item's article page is fetched again some time after it was first seen (``[crawl] revisit``)
to find silent edits and removals. ``revisits`` holds, per item, how many revisits are done,
when the next one is due, the page's validators (ETag / Last-Modified) for a conditional
request, what the page said last time (its title and a hash of its text: a revisit compares
against that) and the lease of the worker doing it. ``removed`` marks an item whose page is
gone and the version that recorded it.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "revisits",
        sa.Column("item_id", Key, nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("last_modified", sa.Text(), nullable=True),
        sa.Column("page_title", sa.Text(), nullable=True),
        sa.Column("page_hash", sa.String(length=80), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_revisits_item_id_items",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name="fk_revisits_source_id_sources",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", name="pk_revisits"),
    )
    op.create_index("ix_revisits_due", "revisits", ["source_id", "due_at"])
    # Plain ADD COLUMN on both backends: a batch (copy-and-rename) of `items` on SQLite would
    # cascade deletes into the tables that reference it.
    op.add_column("items", sa.Column("removed", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("item_versions", sa.Column("removed", sa.Boolean(), nullable=False,
                                             server_default=sa.false()))
    op.create_index("ix_item_versions_fetched", "item_versions", ["fetched_at"])


def downgrade() -> None:
    op.drop_index("ix_item_versions_fetched", table_name="item_versions")
    op.drop_column("item_versions", "removed")  # DROP COLUMN: SQLite 3.35+, no table copy
    op.drop_column("items", "removed")
    op.drop_index("ix_revisits_due", table_name="revisits")
    op.drop_table("revisits")
