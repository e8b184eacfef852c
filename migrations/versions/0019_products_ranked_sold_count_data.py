"""Data: rank the products already listed by the counts they have sold

Without this pass the best-selling order would start from zero for every product
until the periodic ranking task first ran. Downgrade has nothing to undo: 0018's
downgrade drops the column.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 20:31:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE products SET ranked_sold_count = sold_count "
        "WHERE ranked_sold_count IS DISTINCT FROM sold_count"
    )


def downgrade() -> None:
    pass
