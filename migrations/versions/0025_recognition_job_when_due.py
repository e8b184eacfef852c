"""A delivery queues the recognition job only when its order is paid

`orders_deliver_fulfilment` (0011) queued `attribution.recognise_fulfilment` for
every fulfilment it delivered. For a cash-on-delivery parcel whose cash is not
collected yet the job can do nothing: income is earned when the cash is collected,
and the collection queues a job for each delivered fulfilment of the order
(`services.tracking.service`). Those jobs were most of the job worker's work while
parcels were being tracked (every delivery of the tracking benchmark is such a
parcel): a claim, a transaction and three more statements each, about a fifth of
the CPU of the pushes.

Now the delivery queues the job when the order is paid (card orders, and cash
collected before the parcel's delivery was reported), in the same statement as
before. Both the delivery and the collection hold the order's lock when they
decide, so whichever comes second sees the other and queues the job: attribution
still follows every delivered, paid fulfilment through the outbox (and the
one-a-minute backlog sweep behind it).

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-08 00:10:00
"""

from collections.abc import Sequence

from alembic import op

from migrations.earlier import revision as earlier

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELIVER = """
CREATE OR REPLACE FUNCTION orders_deliver_fulfilment(
    p_order uuid, p_fulfilment uuid, p_delivered_at timestamptz, p_now timestamptz
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE fulfilments
       SET status = 'delivered', delivered_at = p_delivered_at, updated_at = p_now
     WHERE id = p_fulfilment AND order_id = p_order AND status = 'shipped';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- The caller holds the order's lock: its payment state cannot change meanwhile.
    INSERT INTO jobs (kind, payload, dedupe_key)
    SELECT 'attribution.recognise_fulfilment',
           jsonb_build_object('fulfilment_id', p_fulfilment::text), p_fulfilment::text
      FROM orders o
     WHERE o.id = p_order AND o.payment_status <> 'unpaid' AND o.paid_at IS NOT NULL
    ON CONFLICT (kind, dedupe_key) WHERE finished_at IS NULL AND failed_at IS NULL
    DO NOTHING;
    IF NOT EXISTS (
        SELECT 1 FROM fulfilments f
         WHERE f.order_id = p_order AND f.status NOT IN ('delivered', 'cancelled')
    ) THEN
        UPDATE orders SET status = 'delivered', updated_at = p_now
         WHERE id = p_order AND status = 'shipped';
        IF FOUND THEN
            INSERT INTO order_events (order_id, from_status, to_status, reason, actor_id, at)
            VALUES (p_order, 'shipped', 'delivered', 'every parcel delivered', NULL, p_now);
        END IF;
    END IF;
    RETURN true;
END
$$
"""


def upgrade() -> None:
    op.execute(DELIVER)


def downgrade() -> None:
    op.execute(earlier("0011").DELIVER.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
