"""rolled-up poll counters; the fetch log partitioned by day on PostgreSQL

`status` and `/metrics` counted polls by scanning the whole fetch log (14–29 M rows a day at
100,000 sources). ``poll_counts`` keeps them per source, outcome and error class, and
``workers.polls`` per worker, both filled here from the existing log and from now on raised
in the transaction that writes each fetch-log row.

On PostgreSQL ``fetch_log`` becomes a table partitioned by day of ``started_at`` (plus a
default partition that catches a poll of a day whose partition is missing), so old days are
dropped whole (storage/partitions.py). The existing rows are copied into it; the id sequence
goes on.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ("id, source_id, started_at, finished_at, outcome, error_class, message, http_status, new, updated, "
           "unchanged, matched, worker_id")


def upgrade() -> None:
    op.create_table(
        "poll_counts",
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error_class", sa.String(length=32), nullable=False),
        sa.Column("polls", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name=op.f("fk_poll_counts_source_id_sources"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("source_id", "outcome", "error_class", name=op.f("pk_poll_counts")),
    )
    op.execute("INSERT INTO poll_counts (source_id, outcome, error_class, polls) "
               "SELECT source_id, outcome, coalesce(error_class, ''), count(*) FROM fetch_log "
               "GROUP BY source_id, outcome, coalesce(error_class, '')")
    with op.batch_alter_table("workers") as batch_op:
        batch_op.add_column(sa.Column("polls", sa.BigInteger(), server_default="0", nullable=False))
    op.execute("UPDATE workers SET polls = (SELECT count(*) FROM fetch_log WHERE fetch_log.worker_id = workers.id)")
    if op.get_bind().dialect.name == "postgresql":
        _partition_fetch_log()


def _partition_fetch_log() -> None:
    from storage.partitions import create_day_partitions

    bind = op.get_bind()
    op.execute("ALTER TABLE fetch_log RENAME TO fetch_log_unpartitioned")
    op.execute("ALTER TABLE fetch_log_unpartitioned RENAME CONSTRAINT pk_fetch_log TO pk_fetch_log_unpartitioned")
    op.execute("ALTER TABLE fetch_log_unpartitioned RENAME CONSTRAINT fk_fetch_log_source_id_sources "
               "TO fk_fetch_log_unpartitioned_source_id_sources")
    op.execute("ALTER INDEX ix_fetch_log_source RENAME TO ix_fetch_log_unpartitioned_source")
    op.execute("ALTER INDEX ix_fetch_log_started RENAME TO ix_fetch_log_unpartitioned_started")
    op.execute("ALTER SEQUENCE fetch_log_id_seq OWNED BY NONE")
    op.execute("""
        CREATE TABLE fetch_log (
            id BIGINT NOT NULL DEFAULT nextval('fetch_log_id_seq'),
            source_id VARCHAR(64) NOT NULL,
            started_at TIMESTAMP WITH TIME ZONE NOT NULL,
            finished_at TIMESTAMP WITH TIME ZONE NOT NULL,
            outcome VARCHAR(16) NOT NULL,
            error_class VARCHAR(32),
            message TEXT,
            http_status INTEGER,
            new INTEGER NOT NULL,
            updated INTEGER NOT NULL,
            unchanged INTEGER NOT NULL,
            matched INTEGER NOT NULL,
            worker_id VARCHAR(128),
            CONSTRAINT pk_fetch_log PRIMARY KEY (id, started_at),
            CONSTRAINT fk_fetch_log_source_id_sources FOREIGN KEY (source_id) REFERENCES sources (id)
                ON DELETE CASCADE
        ) PARTITION BY RANGE (started_at)""")
    op.execute("ALTER SEQUENCE fetch_log_id_seq OWNED BY fetch_log.id")
    op.execute("CREATE INDEX ix_fetch_log_source ON fetch_log (source_id, started_at)")
    op.execute("CREATE INDEX ix_fetch_log_started ON fetch_log (started_at)")
    op.execute("CREATE TABLE fetch_log_default PARTITION OF fetch_log DEFAULT")
    first, last = bind.execute(sa.text("SELECT min(started_at), max(started_at) FROM fetch_log_unpartitioned")).one()
    now: datetime = bind.execute(sa.text("SELECT now()")).scalar_one()
    create_day_partitions(bind, min(first or now, now), max(last or now, now))
    op.execute(f"INSERT INTO fetch_log ({COLUMNS}) SELECT {COLUMNS} FROM fetch_log_unpartitioned")
    op.execute("DROP TABLE fetch_log_unpartitioned")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE TABLE fetch_log_plain (LIKE fetch_log INCLUDING DEFAULTS)")
        op.execute(f"INSERT INTO fetch_log_plain ({COLUMNS}) SELECT {COLUMNS} FROM fetch_log")
        op.execute("ALTER SEQUENCE fetch_log_id_seq OWNED BY NONE")
        op.execute("DROP TABLE fetch_log")
        op.execute("ALTER TABLE fetch_log_plain RENAME TO fetch_log")
        op.execute("ALTER SEQUENCE fetch_log_id_seq OWNED BY fetch_log.id")
        op.execute("ALTER TABLE fetch_log ADD CONSTRAINT pk_fetch_log PRIMARY KEY (id)")
        op.execute("ALTER TABLE fetch_log ADD CONSTRAINT fk_fetch_log_source_id_sources FOREIGN KEY (source_id) "
                   "REFERENCES sources (id) ON DELETE CASCADE")
        op.execute("CREATE INDEX ix_fetch_log_source ON fetch_log (source_id, started_at)")
        op.execute("CREATE INDEX ix_fetch_log_started ON fetch_log (started_at)")
    with op.batch_alter_table("workers") as batch_op:
        batch_op.drop_column("polls")
    op.drop_table("poll_counts")
