"""pair hashes: on PostgreSQL, the index of adjacent word pairs holds each pair as a 32-bit
hash (``int4[]``) instead of its text ("w1 w2", ``text[]``)

A GIN key of an int4 costs the server about a third of a text key's to insert (an import
writes ~400 an item: the pairs were most of the server's work), and the column is no longer
compressed in vain. Two pairs of one hash only widen a phrase's candidates: the tsvector's
positions are still checked on them. ``storage.search.pair_hashes`` computes the same hashes
in Python (tests/test_search_pairs.py checks both on real texts). Existing rows are converted
by rewriting the table, from their stored pairs.

Revision ID: 0009_pair_hashes
Revises: 0008_search_pairs
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0009_pair_hashes"
down_revision = "0008_search_pairs"
branch_labels = None
depends_on = None

# A word's hash: the first 4 bytes of the SHA-256 of its UTF-8, unsigned; a pair's: (h1 *
# 1000003 + h2) mod 2**32 as a signed int4 (bit(32) keeps the low 32 bits). As
# storage.search.word_hash and pair_hash.
SEARCH_PAIR_HASH = """
CREATE OR REPLACE FUNCTION search_pair_hash(a text, b text) RETURNS int4
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ((('x' || encode(substr(sha256(convert_to(a, 'UTF8')), 1, 4), 'hex'))::bit(32)::bigint * 1000003
             + ('x' || encode(substr(sha256(convert_to(b, 'UTF8')), 1, 4), 'hex'))::bit(32)::bigint)::bit(32))::int4
$$
"""
# The hashes of the pairs of the lexemes at adjacent positions of a tsvector: exactly the pairs
# that its phrase operator (<->) can match.
SEARCH_PAIR_HASHES = """
CREATE OR REPLACE FUNCTION search_pair_hashes(v tsvector) RETURNS int4[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    WITH at AS (SELECT u.lexeme, p FROM unnest(v) u, unnest(u.positions) p)
    SELECT coalesce(array_agg(DISTINCT search_pair_hash(a.lexeme, b.lexeme)), '{}')
    FROM at a JOIN at b ON b.p = a.p + 1
$$
"""
# 0008's function (for the downgrade)
TEXT_PAIRS = """
CREATE OR REPLACE FUNCTION search_pairs(v tsvector) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    WITH at AS (SELECT u.lexeme, p FROM unnest(v) u, unnest(u.positions) p)
    SELECT coalesce(array_agg(DISTINCT a.lexeme || ' ' || b.lexeme), '{}')
    FROM at a JOIN at b ON b.p = a.p + 1
$$
"""
# the stored pairs' hashes (ALTER … USING takes no subquery: a function, dropped after)
TEXT_TO_HASHES = """
CREATE OR REPLACE FUNCTION search_pairs_hashed(pairs text[]) RETURNS int4[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT search_pair_hash(split_part(p, ' ', 1), split_part(p, ' ', 2))), '{}')
    FROM unnest(pairs) p
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # FTS5 checks phrases from its own positions
    op.execute(SEARCH_PAIR_HASH)
    op.execute("DROP INDEX ix_items_search_pairs")
    op.execute("SET LOCAL maintenance_work_mem = '256MB'")
    # rewritten (ALTER … TYPE … USING), not updated: an UPDATE leaves every row's old version behind
    op.execute(TEXT_TO_HASHES)
    op.execute("ALTER TABLE items_search ALTER COLUMN pairs TYPE int4[] USING search_pairs_hashed(pairs)")
    op.execute("DROP FUNCTION search_pairs_hashed(text[])")
    # random hashes do not compress: out of line as they are (the tsvector stays in the row)
    op.execute("ALTER TABLE items_search ALTER COLUMN pairs SET STORAGE EXTERNAL")
    op.execute("DROP FUNCTION search_pairs(tsvector)")  # 0008's, of text pairs
    op.execute(SEARCH_PAIR_HASHES)
    op.execute("CREATE INDEX ix_items_search_pairs ON items_search USING gin (pairs)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("DROP INDEX ix_items_search_pairs")
    op.execute("DROP FUNCTION search_pair_hashes(tsvector)")
    op.execute(TEXT_PAIRS)
    op.execute("SET LOCAL maintenance_work_mem = '256MB'")
    op.execute('ALTER TABLE items_search ALTER COLUMN pairs TYPE text[] COLLATE "C" USING search_pairs(terms)')
    op.execute("ALTER TABLE items_search ALTER COLUMN pairs SET STORAGE EXTENDED")
    op.execute("CREATE INDEX ix_items_search_pairs ON items_search USING gin (pairs)")
    op.execute("DROP FUNCTION search_pair_hash(text, text)")
