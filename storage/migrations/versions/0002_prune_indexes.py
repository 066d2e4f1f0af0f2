"""indexes for the prune job: fetch_log by started_at, story_bands by seen_at

The 6-hourly prune (storage/maintenance.py) deletes ``fetch_log`` rows by ``started_at`` and
``story_bands`` rows by ``seen_at``; the existing indexes lead with ``source_id`` and ``band``,
so both deletes scanned their whole table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_fetch_log_started", "fetch_log", ["started_at"], unique=False)
    op.create_index("ix_story_bands_seen", "story_bands", ["seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_story_bands_seen", table_name="story_bands")
    op.drop_index("ix_fetch_log_started", table_name="fetch_log")
