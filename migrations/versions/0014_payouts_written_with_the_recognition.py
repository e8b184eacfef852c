"""Payouts written by the recognition statement; no key checks on what it copies

`ledger_payout_state(settlement_hold, payment_method, stripe_account_id, amount)`
is the state a new payout takes (services.ledger.payouts says why): `held` when a
dispute holds the order's settlement, `pending` (a Stripe transfer to make) for a
Stripe payment to a cooperative with a connected account and something to pay,
`payable` otherwise. The recognition statement writes each fulfilment's payout
with it, and the backfill of missing payouts uses it too.

`ledger_recognitions` and `payouts` lose their foreign keys to the fulfilment,
the order and the cooperative: both are written by the recognition statement
from the rows it has just read (the fulfilment and its order, locked), and none
of those is ever deleted. Each key check locks the referenced row (FOR KEY
SHARE, a write to its page), five per fulfilment recognised; dropping them took
a fifth off the database's time for a backlog. The household and refund keys of
`ledger_entries` stay.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 13:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, referenced table)
_KEYS = (
    ("ledger_recognitions", "fulfilment_id", "fulfilments"),
    ("ledger_recognitions", "order_id", "orders"),
    ("payouts", "fulfilment_id", "fulfilments"),
    ("payouts", "order_id", "orders"),
    ("payouts", "cooperative_id", "cooperatives"),
)

PAYOUT_STATE = """
CREATE FUNCTION ledger_payout_state(
    settlement_hold boolean, payment_method text, stripe_account_id text, amount bigint
) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE WHEN settlement_hold THEN 'held'
            WHEN amount > 0 AND payment_method = 'stripe' AND stripe_account_id IS NOT NULL
                THEN 'pending'
            ELSE 'payable' END
$$
"""


def upgrade() -> None:
    op.execute(PAYOUT_STATE)
    for table, column, referenced in _KEYS:
        op.drop_constraint(op.f(f"fk_{table}_{column}_{referenced}"), table, type_="foreignkey")


def downgrade() -> None:
    for table, column, referenced in _KEYS:
        op.create_foreign_key(
            op.f(f"fk_{table}_{column}_{referenced}"), table, referenced, [column], ["id"]
        )
    op.execute("DROP FUNCTION ledger_payout_state(boolean, text, text, bigint)")
