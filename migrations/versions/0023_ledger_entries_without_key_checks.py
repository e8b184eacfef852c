"""Ledger entries without the household and refund key checks

`ledger_entries` kept two foreign keys when 0014 dropped the others: to the household
whose part an entry is, and to the refund an adjustment follows. Both are written from
rows the writing transaction has just read: a recognition copies the households of
the line's share snapshot (taken from `supply_share_entries`, whose own key holds
them to `households`), an adjustment the refund it has just written. Households and
refunds are never deleted. `marketplace ledger-audit` recomputes every line's entries
from its snapshot and refunds, and reports an entry for any other household.

Each check was a trigger per entry that locked the referenced household (FOR KEY
SHARE, a write to its page; two batches locking one household make a multixact).
EXPLAIN ANALYZE of one backlog batch of 20,000 fulfilments (34,815 lines, 85,764
entries): 346 ms in the household key's trigger and 59 ms in the refund key's, of
3,515 ms for the recognition statement.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 19:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (column, referenced table)
_KEYS = (("household_id", "households"), ("refund_id", "refunds"))


def upgrade() -> None:
    for column, referenced in _KEYS:
        op.drop_constraint(
            op.f(f"fk_ledger_entries_{column}_{referenced}"), "ledger_entries", type_="foreignkey"
        )


def downgrade() -> None:
    for column, referenced in _KEYS:
        op.create_foreign_key(
            op.f(f"fk_ledger_entries_{column}_{referenced}"),
            "ledger_entries",
            referenced,
            [column],
            ["id"],
        )
