"""search pairs: on PostgreSQL, an index of each item's adjacent word pairs (issue #23), so a
phrase is narrowed by exact GIN lookups before its positions are checked

Revision ID: 0008_search_pairs
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0008_search_pairs"
down_revision = "0007"
branch_labels = None
depends_on = None

# The pairs "w1 w2" of the lexemes at adjacent positions of a tsvector: exactly the pairs that
# its phrase operator (<->) can match. storage.search.search_pairs computes the same in Python.
SEARCH_PAIRS = """
CREATE OR REPLACE FUNCTION search_pairs(v tsvector) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    WITH at AS (SELECT u.lexeme, p FROM unnest(v) u, unnest(u.positions) p)
    SELECT coalesce(array_agg(DISTINCT a.lexeme || ' ' || b.lexeme), '{}')
    FROM at a JOIN at b ON b.p = a.p + 1
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # FTS5 checks phrases from its own positions
    op.execute(SEARCH_PAIRS)
    # The tsvector stays in the row (compressed if need be) and the pairs, read only to check a
    # phrase's few candidates, go to the TOAST table: with both in the row (~2.7 KB), the tsvector
    # went out of line and every item the newest-first walk tests cost 3 more page reads.
    op.execute("ALTER TABLE items_search ALTER COLUMN terms SET STORAGE MAIN")
    op.execute('ALTER TABLE items_search ADD COLUMN pairs text[] COLLATE "C"')
    # filled by rewriting the table (ALTER … TYPE … USING), not by UPDATE, which would leave
    # every row's old version behind (twice the table until a VACUUM FULL)
    op.execute("SET LOCAL maintenance_work_mem = '256MB'")
    op.execute('ALTER TABLE items_search ALTER COLUMN pairs TYPE text[] COLLATE "C" USING search_pairs(terms)')
    op.execute("ALTER TABLE items_search ALTER COLUMN pairs SET NOT NULL")
    op.execute("CREATE INDEX ix_items_search_pairs ON items_search USING gin (pairs)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("DROP INDEX ix_items_search_pairs")
    op.execute("ALTER TABLE items_search DROP COLUMN pairs")
    op.execute("ALTER TABLE items_search ALTER COLUMN terms SET STORAGE EXTENDED")
    op.execute("DROP FUNCTION search_pairs(tsvector)")
