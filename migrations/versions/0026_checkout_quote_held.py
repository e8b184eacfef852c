"""checkout_quote_held: the guard of checkout's one-statement fast path

A checkout now reads its cart's products without locks (a quote), builds the order
from them, and sends one statement that claims the Idempotency-Key, reserves each
product only if it is still for sale, in stock and as quoted (checked under its row
lock), and writes the order (`services.orders.checkout.place_quoted`). That
statement is its own transaction, one round trip where the transactional path takes
four. If a product was not taken, the statement must be undone, the reservations of
the others and the key's claim with it: an error is the only way a statement can
undo itself. This function raises that error, with its own SQLSTATE, MK001, which
the caller recognises and answers by going the transactional way.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-08 02:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HELD = """
CREATE FUNCTION checkout_quote_held(held boolean) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF held IS NOT TRUE THEN
        RAISE EXCEPTION 'A quoted product changed or ran short before it was reserved.'
            USING ERRCODE = 'MK001';
    END IF;
    RETURN true;
END
$$
"""


def upgrade() -> None:
    op.execute(HELD)


def downgrade() -> None:
    op.execute("DROP FUNCTION checkout_quote_held(boolean)")
