"""ledger_split_lines: a whole batch of lines split in one pass

`ledger_split(net, shares)` (0010) ran once per line: a sort and two window
passes for every line of a backlog batch. `ledger_split_lines(ids, nets,
shares)` splits many lines at once with the same arithmetic (largest remainder
on integer fen; parties in household-id order, the cooperative last with the
basis points left over; ties to the earlier party), its window functions
partitioned by line, so a batch is one sort. `ledger_split` is now that function
over one line, so the property test that holds `ledger_split` equal to the
Python `split` holds the batch function too.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 13:40:00
"""

from collections.abc import Sequence

from alembic import op

from migrations.earlier import revision as earlier

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SPLIT_LINES = """
CREATE FUNCTION ledger_split_lines(ids uuid[], nets bigint[], shares jsonb[])
RETURNS TABLE (line_id uuid, household_id uuid, amount_fen bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT p.line_id, p.household_id,
       p.floor_fen + CASE WHEN row_number() OVER (PARTITION BY p.line_id
                                                  ORDER BY p.remainder DESC, p.position)
                               <= p.net - sum(p.floor_fen) OVER (PARTITION BY p.line_id)
                          THEN 1 ELSE 0 END
FROM (
    SELECT w.line_id, w.net, w.household_id, w.position,
           w.net * w.weight / 10000 AS floor_fen,
           w.net * w.weight % 10000 AS remainder
    FROM (
        SELECT l.id AS line_id, l.net, h.household_id, h.basis_points::bigint AS weight,
               row_number() OVER (PARTITION BY l.id ORDER BY h.household_id) AS position
        FROM unnest(ids, nets, shares) AS l(id, net, shares)
        CROSS JOIN LATERAL jsonb_to_recordset(l.shares)
            AS h(household_id uuid, basis_points integer)
        UNION ALL
        SELECT l.id, l.net, NULL,
               10000 - coalesce((SELECT sum(s.basis_points)
                                 FROM jsonb_to_recordset(l.shares) AS s(basis_points integer)), 0),
               2147483647
        FROM unnest(ids, nets, shares) AS l(id, net, shares)
    ) w
) p
$$
"""

SPLIT = """
CREATE OR REPLACE FUNCTION ledger_split(net bigint, shares jsonb)
RETURNS TABLE (household_id uuid, amount_fen bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT s.household_id, s.amount_fen
FROM ledger_split_lines(ARRAY['00000000-0000-0000-0000-000000000000'::uuid], ARRAY[net],
                        ARRAY[shares]) AS s
$$
"""


def upgrade() -> None:
    op.execute(SPLIT_LINES)
    op.execute(SPLIT)


def downgrade() -> None:
    previous = earlier("0010").SPLIT
    op.execute(previous.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
    op.execute("DROP FUNCTION ledger_split_lines(uuid[], bigint[], jsonb[])")
