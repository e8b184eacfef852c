"""orders_record_sale, orders_confirm_paid and stripe_intent_succeeded in SQL

A Stripe `payment_intent.succeeded` used to cost some fifteen round trips; the
usual one (the payment found by its intent, pending, its order awaiting payment)
is now one statement, sent outside any transaction.

- `orders_record_sale(order, amount, now[, status])`: money received. The order is
  paid (`paid_fen`, `paid_at`, `payment_status`, no more reservation; and moved to
  `status` when given, in the same UPDATE), its reserved
  units count as sold (products in id order, as checkout reserves them, so that
  two transactions never wait on each other's products), and each line's share
  snapshot is taken again: the set in force at `now` with its entries by household.
  `services.orders.service.record_sale` (cash collected) calls it too.
- `orders_confirm_paid(order, amount, now)`: a Stripe payment succeeded for an
  order awaiting payment: the order is confirmed (with its history row), its
  fulfilments are ready, and the sale is recorded. The only move to `confirmed`
  in `services.orders.states.TRANSITIONS` is from `awaiting_payment`; anything
  else raises. `services.orders.service.confirm_paid` calls it too.
- `stripe_intent_succeeded(<the event's columns>, intent, amount, now)`: the
  event stored once by its id (the row written last, with its outcome), the
  payment locked, then the order; `deferred`, with nothing written, for anything
  but the usual case (no payment with this intent, an order no longer awaiting
  payment), which `services.payments.service.receive_event` then applies in a
  transaction.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 09:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECORD_SALE = """
CREATE FUNCTION orders_record_sale(
    p_order uuid, p_amount bigint, p_now timestamptz, p_status text DEFAULT NULL
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    sold record;
BEGIN
    UPDATE orders
       SET paid_fen = p_amount, paid_at = p_now, payment_status = 'paid',
           reserved_until = NULL, status = coalesce(p_status, status), updated_at = p_now
     WHERE id = p_order;
    FOR sold IN
        SELECT l.product_id, sum(l.quantity) AS quantity
          FROM order_lines l
         WHERE l.order_id = p_order
         GROUP BY l.product_id
         ORDER BY l.product_id::text
    LOOP
        UPDATE products
           SET reserved = reserved - sold.quantity,
               sold_count = sold_count + sold.quantity,
               updated_at = now()
         WHERE id = sold.product_id;
    END LOOP;
    UPDATE order_lines l
       SET share_set_id = snapshot.set_id,
           shares = snapshot.shares,
           shares_at = p_now
      FROM (
        SELECT l2.id AS line_id, s.id AS set_id,
               coalesce((
                   SELECT jsonb_agg(jsonb_build_object(
                              'household_id', e.household_id::text,
                              'basis_points', e.basis_points)
                          ORDER BY e.household_id)
                     FROM supply_share_entries e
                    WHERE e.set_id = s.id
               ), '[]'::jsonb) AS shares
          FROM order_lines l2
          LEFT JOIN LATERAL (
              SELECT ss.id
                FROM supply_share_sets ss
               WHERE ss.product_id = l2.product_id AND ss.effective_from <= p_now
               ORDER BY ss.effective_from DESC, ss.id DESC
               LIMIT 1
          ) s ON true
         WHERE l2.order_id = p_order
      ) snapshot
     WHERE l.id = snapshot.line_id;
END
$$
"""

CONFIRM_PAID = """
CREATE FUNCTION orders_confirm_paid(p_order uuid, p_amount bigint, p_now timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    before text;
BEGIN
    SELECT status INTO before FROM orders WHERE id = p_order;
    IF before IS DISTINCT FROM 'awaiting_payment' THEN
        RAISE EXCEPTION 'An order cannot move from % to confirmed.', before
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO order_events (order_id, from_status, to_status, reason, actor_id, at)
    VALUES (p_order, before, 'confirmed', 'payment succeeded', NULL, p_now);
    UPDATE fulfilments
       SET status = 'ready', updated_at = p_now
     WHERE order_id = p_order AND status IN ('awaiting_payment', 'ready');
    -- The order's new status goes with its paid fields: one new version of the row.
    PERFORM orders_record_sale(p_order, p_amount, p_now, 'confirmed');
END
$$
"""

INTENT_SUCCEEDED = """
CREATE FUNCTION stripe_intent_succeeded(
    p_id text, p_type text, p_object_id text, p_created timestamptz, p_livemode boolean,
    p_payload jsonb, p_intent text, p_amount bigint, p_now timestamptz,
    OUT outcome text
) LANGUAGE plpgsql AS $$
DECLARE
    payment record;
    order_status text;
BEGIN
    IF EXISTS (SELECT 1 FROM stripe_events WHERE id = p_id) THEN
        outcome := 'duplicate';
        RETURN;
    END IF;
    SELECT p.id, p.order_id, p.state INTO payment
      FROM payments p WHERE p.provider_payment_id = p_intent
       FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'deferred';
        RETURN;
    END IF;
    IF payment.state = 'succeeded' THEN
        outcome := 'already-succeeded';
    ELSE
        SELECT o.status INTO order_status FROM orders o WHERE o.id = payment.order_id FOR UPDATE;
        IF order_status IS DISTINCT FROM 'awaiting_payment' THEN
            outcome := 'deferred';
            RETURN;
        END IF;
        UPDATE payments
           SET state = 'succeeded', succeeded_at = p_created, updated_at = now()
         WHERE id = payment.id;
        PERFORM orders_confirm_paid(payment.order_id, p_amount, p_now);
        outcome := 'order-confirmed';
    END IF;
    INSERT INTO stripe_events (id, type, object_id, created, livemode, payload, outcome,
                               received_at)
    VALUES (p_id, p_type, p_object_id, p_created, p_livemode, p_payload, outcome, p_now)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        -- The same event, applied by a concurrent delivery while this one waited for
        -- the payment's lock: this one found it succeeded and changed nothing.
        outcome := 'duplicate';
    END IF;
END
$$
"""


def upgrade() -> None:
    op.execute(RECORD_SALE)
    op.execute(CONFIRM_PAID)
    op.execute(INTENT_SUCCEEDED)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION stripe_intent_succeeded(text, text, text, timestamptz, boolean, jsonb, "
        "text, bigint, timestamptz)"
    )
    op.execute("DROP FUNCTION orders_confirm_paid(uuid, bigint, timestamptz)")
    op.execute("DROP FUNCTION orders_record_sale(uuid, bigint, timestamptz, text)")
