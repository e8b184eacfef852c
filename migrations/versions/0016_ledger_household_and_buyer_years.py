"""ledger_household_years, ledger_buyer_years: running totals beside the ledger

What each household holds in each assessment year, and what each buyer gave it,
kept by the statements that append entries (services.ledger.totals), so that the
dominant-buyer rule reads a row per household instead of summing every entry of
every household a recognition touches. No foreign keys, like the ledger's own
copies of its line (0010, 0014): `marketplace ledger-audit` compares the totals
with the entries. The sums of the entries already there come in 0017.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 05:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_household_years",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("year", sa.SmallInteger(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("household_id", "year", name=op.f("pk_ledger_household_years")),
    )
    op.create_table(
        "ledger_buyer_years",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("year", sa.SmallInteger(), nullable=False),
        sa.Column("buyer_id", sa.Uuid(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "household_id", "year", "buyer_id", name=op.f("pk_ledger_buyer_years")
        ),
    )
    op.create_index(
        "ix_ledger_buyer_years_household_id_year_amount_fen",
        "ledger_buyer_years",
        ["household_id", "year", "amount_fen"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_ledger_buyer_years_household_id_year_amount_fen", table_name="ledger_buyer_years"
    )
    op.drop_table("ledger_buyer_years")
    op.drop_table("ledger_household_years")
