"""ledger_split in SQL; no keys on what ledger entries copy from their line; flags by household

Every entry is written from its order line, in the transaction that recognises
it (INSERT … SELECT from order_lines) or refunds it (rows built from the line it
has just read), so the line, order, fulfilment, product, cooperative and buyer it
names exist by construction. Checking six keys per entry
(each with a FOR KEY SHARE lock on the referenced row) cost half the time of
recognising a backlog; `marketplace ledger-audit` now checks every entry against
its line instead. The household and refund keys stay.

`ledger_net(gross, fee, refunded)` is a line's net revenue once `refunded` of its
gross went back (`services.ledger.service.net_after`), and `ledger_split(net,
shares)` is the split of a line's net revenue between the
households of its share snapshot and the cooperative (NULL), by the largest
remainder on integer fen, exactly as `services.ledger.service.split`: parties in
household-id order, the cooperative last with the basis points left over; each
gets the floor of its exact share and the fen left over go to the largest
remainders, ties to the earlier party. Recognition splits whole batches of lines
with it in one statement.

Flags get an index by household and year: the anomaly rules look up the flags
already raised for the households of each batch they review.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 05:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (column, referenced table)
_KEYS = (
    ("line_id", "order_lines"),
    ("order_id", "orders"),
    ("fulfilment_id", "fulfilments"),
    ("product_id", "products"),
    ("cooperative_id", "cooperatives"),
    ("buyer_id", "users"),
)


NET = """
CREATE FUNCTION ledger_net(gross bigint, fee bigint, refunded bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT (gross - refunded) - CASE WHEN gross > 0 THEN fee * (gross - refunded) / gross ELSE 0 END
$$
"""

SPLIT = """
CREATE FUNCTION ledger_split(net bigint, shares jsonb)
RETURNS TABLE (household_id uuid, amount_fen bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT p.household_id,
       p.floor_fen + CASE WHEN row_number() OVER (ORDER BY p.remainder DESC, p.position)
                               <= net - sum(p.floor_fen) OVER () THEN 1 ELSE 0 END
FROM (
    SELECT w.household_id, w.position,
           net * w.weight / 10000 AS floor_fen,
           net * w.weight % 10000 AS remainder
    FROM (
        SELECT h.household_id, h.basis_points::bigint AS weight,
               row_number() OVER (ORDER BY h.household_id) AS position
        FROM jsonb_to_recordset(shares) AS h(household_id uuid, basis_points integer)
        UNION ALL
        SELECT NULL,
               10000 - coalesce((SELECT sum(s.basis_points)
                                 FROM jsonb_to_recordset(shares) AS s(basis_points integer)), 0),
               2147483647
    ) w
) p
$$
"""


def upgrade() -> None:
    op.execute(NET)
    op.execute(SPLIT)
    for column, table in _KEYS:
        op.drop_constraint(
            op.f(f"fk_ledger_entries_{column}_{table}"), "ledger_entries", type_="foreignkey"
        )
    op.create_index(
        op.f("ix_attribution_flags_household_id_year"),
        "attribution_flags",
        ["household_id", "year"],
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION ledger_split(bigint, jsonb)")
    op.execute("DROP FUNCTION ledger_net(bigint, bigint, bigint)")
    op.drop_index(op.f("ix_attribution_flags_household_id_year"), table_name="attribution_flags")
    for column, table in _KEYS:
        op.create_foreign_key(
            op.f(f"fk_ledger_entries_{column}_{table}"),
            "ledger_entries",
            table,
            [column],
            ["id"],
        )
