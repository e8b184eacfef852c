"""Best-selling order from a periodically refreshed count, so that a sale is a HOT update

Every sale and every reservation updates its products rows. While `sold_count`
was indexed (the best-selling sort), each of those updates wrote a new entry into
every index of `products`, the GIN index of search grams included. The sort now
reads `ranked_sold_count`, which a periodic task copies from `sold_count`; no index
covers a column that a sale changes, and a lower fillfactor leaves room on each
page for the new row version, so PostgreSQL can make those updates HOT.

The copy of the counts is the data migration 0019.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LISTED = sa.text("status = 'active' AND cooperative_active")


def upgrade() -> None:
    op.add_column(
        "products",
        sa.Column(
            "ranked_sold_count",
            sa.BigInteger(),
            server_default="0",
            nullable=False,
            comment="sold_count as of the last ranking pass; the best-selling sort reads it.",
        ),
    )
    _best_selling_index_on("ranked_sold_count")
    # Pages written from now on keep a fifth free for updated row versions.
    op.execute("ALTER TABLE products SET (fillfactor = 80)")


def downgrade() -> None:
    op.execute("ALTER TABLE products RESET (fillfactor)")
    _best_selling_index_on("sold_count")
    op.drop_column("products", "ranked_sold_count")


def _best_selling_index_on(column: str) -> None:
    op.drop_index("ix_products_active_best_selling", table_name="products")
    op.create_index(
        "ix_products_active_best_selling",
        "products",
        [sa.literal_column(f"{column} DESC"), sa.literal_column("id DESC")],
        unique=False,
        postgresql_where=LISTED,
    )
