"""stripe_intent_succeeded locks the order before the payment

Every other path that changes an order and its payment (checkout recording the
intent, a buyer's cancel, reservation expiry, refunds, cash collection) locks the
order first, then the payment. The one-statement `payment_intent.succeeded` of
0012 locked the payment first: a buyer cancelling while Stripe reported the
payment could deadlock with it, PostgreSQL then aborting one of the two after
`deadlock_timeout`. The payment's order never changes, so it is read without a
lock, the order locked, then the payment.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 13:00:00
"""

from collections.abc import Sequence

from alembic import op

from migrations.earlier import revision as earlier

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INTENT_SUCCEEDED = """
CREATE OR REPLACE FUNCTION stripe_intent_succeeded(
    p_id text, p_type text, p_object_id text, p_created timestamptz, p_livemode boolean,
    p_payload jsonb, p_intent text, p_amount bigint, p_now timestamptz,
    OUT outcome text
) LANGUAGE plpgsql AS $$
DECLARE
    v_order uuid;
    order_status text;
    payment record;
BEGIN
    IF EXISTS (SELECT 1 FROM stripe_events WHERE id = p_id) THEN
        outcome := 'duplicate';
        RETURN;
    END IF;
    SELECT p.order_id INTO v_order FROM payments p WHERE p.provider_payment_id = p_intent;
    IF NOT FOUND THEN
        outcome := 'deferred';
        RETURN;
    END IF;
    SELECT o.status INTO order_status FROM orders o WHERE o.id = v_order FOR UPDATE;
    SELECT p.id, p.state INTO payment
      FROM payments p WHERE p.order_id = v_order AND p.provider_payment_id = p_intent
       FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'deferred';
        RETURN;
    END IF;
    IF payment.state = 'succeeded' THEN
        outcome := 'already-succeeded';
    ELSE
        IF order_status IS DISTINCT FROM 'awaiting_payment' THEN
            outcome := 'deferred';
            RETURN;
        END IF;
        UPDATE payments
           SET state = 'succeeded', succeeded_at = p_created, updated_at = now()
         WHERE id = payment.id;
        PERFORM orders_confirm_paid(v_order, p_amount, p_now);
        outcome := 'order-confirmed';
    END IF;
    INSERT INTO stripe_events (id, type, object_id, created, livemode, payload, outcome,
                               received_at)
    VALUES (p_id, p_type, p_object_id, p_created, p_livemode, p_payload, outcome, p_now)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        -- The same event, applied by a concurrent delivery while this one waited for
        -- the order's lock: this one found it succeeded and changed nothing.
        outcome := 'duplicate';
    END IF;
END
$$
"""


def upgrade() -> None:
    op.execute(INTENT_SUCCEEDED)


def downgrade() -> None:
    # 0012's definition, from 0012 itself rather than a second copy of it.
    previous = earlier("0012").INTENT_SUCCEEDED
    op.execute(previous.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
