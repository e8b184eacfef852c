"""Data: the running totals of 0016 from the entries already in the ledger

One pass over the households' entries, grouped by household, year and buyer.
Downgrade empties the totals (0016's downgrade drops them).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 05:21:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        INSERT INTO ledger_buyer_years (household_id, year, buyer_id, amount_fen)
        SELECT household_id, year, buyer_id, sum(amount_fen)
        FROM ledger_entries
        WHERE household_id IS NOT NULL
        GROUP BY household_id, year, buyer_id
        HAVING sum(amount_fen) <> 0
        """
    )
    op.execute(
        """
        INSERT INTO ledger_household_years (household_id, year, amount_fen)
        SELECT household_id, year, sum(amount_fen)
        FROM ledger_buyer_years
        GROUP BY household_id, year
        HAVING sum(amount_fen) <> 0
        """
    )


def downgrade() -> None:
    op.execute("TRUNCATE ledger_buyer_years, ledger_household_years")
