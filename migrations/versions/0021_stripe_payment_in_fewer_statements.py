"""A Stripe payment that succeeded, recorded in fewer statements

The usual `payment_intent.succeeded` (the payment found by its intent, pending, its
order awaiting payment) ran some fourteen statements inside
`stripe_intent_succeeded`, each with its executor's start-up; a third of them only
read again what an earlier one knew. Same effects, same locks in the same order:

- `stripe_intent_succeeded` asks in one query whether the event was seen and which
  order the intent pays. It locks the order, then (while the order awaits payment)
  marks the payment succeeded with an UPDATE that takes the payment's lock itself,
  instead of a locking SELECT followed by that UPDATE. Only when nothing was marked
  does it read the payment under its lock to tell a repeat (already succeeded) from
  what `services.payments.service.receive_event` must apply.
- `orders_confirmed_by_payment(order, amount, now)`: what confirms an order whose
  payment succeeded (its history row, its fulfilments ready, the sale recorded),
  for a caller that holds the order's lock and has seen it awaiting payment.
  `orders_confirm_paid` checks that, then calls it; the Stripe path calls it
  directly, without reading the order's status a second time.
- `orders_record_sale` moves the sold units of all the order's products in one
  statement: the products locked in id order first (as checkout reserves them), then
  updated, where it looped over them with one UPDATE each.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 17:00:00
"""

from collections.abc import Sequence

from alembic import op

from migrations.earlier import revision as earlier

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECORD_SALE = """
CREATE OR REPLACE FUNCTION orders_record_sale(
    p_order uuid, p_amount bigint, p_now timestamptz, p_status text DEFAULT NULL
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE orders
       SET paid_fen = p_amount, paid_at = p_now, payment_status = 'paid',
           reserved_until = NULL, status = coalesce(p_status, status), updated_at = p_now
     WHERE id = p_order;
    WITH sold AS (
        SELECT l.product_id, sum(l.quantity) AS quantity
          FROM order_lines l
         WHERE l.order_id = p_order
         GROUP BY l.product_id
    ), locked AS MATERIALIZED (
        SELECT p.id, s.quantity
          FROM products p JOIN sold s ON s.product_id = p.id
         ORDER BY p.id
           FOR NO KEY UPDATE OF p
    )
    UPDATE products p
       SET reserved = p.reserved - k.quantity,
           sold_count = p.sold_count + k.quantity,
           updated_at = now()
      FROM locked k
     WHERE p.id = k.id;
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

CONFIRMED_BY_PAYMENT = """
CREATE FUNCTION orders_confirmed_by_payment(p_order uuid, p_amount bigint, p_now timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO order_events (order_id, from_status, to_status, reason, actor_id, at)
    VALUES (p_order, 'awaiting_payment', 'confirmed', 'payment succeeded', NULL, p_now);
    UPDATE fulfilments
       SET status = 'ready', updated_at = p_now
     WHERE order_id = p_order AND status IN ('awaiting_payment', 'ready');
    -- The order's new status goes with its paid fields: one new version of the row.
    PERFORM orders_record_sale(p_order, p_amount, p_now, 'confirmed');
END
$$
"""

CONFIRM_PAID = """
CREATE OR REPLACE FUNCTION orders_confirm_paid(p_order uuid, p_amount bigint, p_now timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    before text;
BEGIN
    SELECT status INTO before FROM orders WHERE id = p_order;
    IF before IS DISTINCT FROM 'awaiting_payment' THEN
        RAISE EXCEPTION 'An order cannot move from % to confirmed.', before
            USING ERRCODE = 'check_violation';
    END IF;
    PERFORM orders_confirmed_by_payment(p_order, p_amount, p_now);
END
$$
"""

INTENT_SUCCEEDED = """
CREATE OR REPLACE FUNCTION stripe_intent_succeeded(
    p_id text, p_type text, p_object_id text, p_created timestamptz, p_livemode boolean,
    p_payload jsonb, p_intent text, p_amount bigint, p_now timestamptz,
    OUT outcome text
) LANGUAGE plpgsql AS $$
DECLARE
    seen boolean;
    v_order uuid;
    order_status text;
    payment_state text;
BEGIN
    SELECT EXISTS (SELECT FROM stripe_events e WHERE e.id = p_id),
           (SELECT p.order_id FROM payments p WHERE p.provider_payment_id = p_intent)
      INTO seen, v_order;
    IF seen THEN
        outcome := 'duplicate';
        RETURN;
    END IF;
    IF v_order IS NULL THEN
        outcome := 'deferred';
        RETURN;
    END IF;
    -- The order's lock first, then the payment's (the UPDATE takes it).
    SELECT o.status INTO order_status FROM orders o WHERE o.id = v_order FOR UPDATE;
    IF order_status = 'awaiting_payment' THEN
        UPDATE payments
           SET state = 'succeeded', succeeded_at = p_created, updated_at = now()
         WHERE order_id = v_order AND provider_payment_id = p_intent
           AND state <> 'succeeded';
        IF FOUND THEN
            PERFORM orders_confirmed_by_payment(v_order, p_amount, p_now);
            outcome := 'order-confirmed';
        END IF;
    END IF;
    IF outcome IS NULL THEN
        SELECT p.state INTO payment_state
          FROM payments p WHERE p.order_id = v_order AND p.provider_payment_id = p_intent
           FOR UPDATE;
        IF payment_state IS DISTINCT FROM 'succeeded' THEN
            -- No such payment any more, or an order no longer awaiting payment:
            -- receive_event applies it in a transaction.
            outcome := 'deferred';
            RETURN;
        END IF;
        outcome := 'already-succeeded';
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
    op.execute(RECORD_SALE)
    op.execute(CONFIRMED_BY_PAYMENT)
    op.execute(CONFIRM_PAID)
    op.execute(INTENT_SUCCEEDED)


def downgrade() -> None:
    # The previous definitions, from the revisions that wrote them.
    replace = ("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
    op.execute(earlier("0013").INTENT_SUCCEEDED.replace(*replace))
    op.execute(earlier("0012").CONFIRM_PAID.replace(*replace))
    op.execute(earlier("0012").RECORD_SALE.replace(*replace))
    op.execute("DROP FUNCTION orders_confirmed_by_payment(uuid, bigint, timestamptz)")
