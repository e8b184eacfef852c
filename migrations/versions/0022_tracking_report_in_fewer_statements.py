"""A tracking report applied in fewer statements

A provider's push ran some ten statements inside `tracking_receive`; three of them
only read again what an earlier one had, or are done by another anyway. Same
effects, same locks in the same order:

- `tracking_receive` locks the parcel and reads what the report needs of it in one
  statement, where it locked the row and `tracking_apply` then read it.
- `tracking_apply_locked(shipment, <its status, status time, county, order,
  fulfilment, whether it goes to a village site>, source, kind, actor, now, <the
  event arrays>)`: what `tracking_apply` did after reading the parcel, for a caller
  that holds its lock and has read it. It stores the unseen events with one INSERT
  ... ON CONFLICT DO NOTHING RETURNING what it stored, where a query first picked
  out the unseen events and the INSERT then went through all of them again; the
  parcel's new status is folded from what was stored.
- `tracking_apply` (manual events and polls, whose callers lock the parcel
  themselves) reads the parcel and calls it.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 17:30:00
"""

from collections.abc import Sequence

from alembic import op

from migrations.earlier import revision as earlier

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPLY_LOCKED = """
CREATE FUNCTION tracking_apply_locked(
    p_shipment uuid, p_status text, p_status_at timestamptz, p_county text, p_order uuid,
    p_fulfilment uuid, p_to_site boolean,
    p_source text, p_kind text, p_actor uuid, p_now timestamptz,
    p_keys text[], p_statuses text[], p_raw text[], p_times timestamptz[],
    p_locations text[], p_descriptions text[],
    OUT new_events integer, OUT status text, OUT delivered boolean
) LANGUAGE plpgsql AS $$
DECLARE
    fresh record;
    moved record;
    arrived record;
BEGIN
    -- The events this parcel has not seen, each key once, stored in the order reported.
    WITH stored AS (
        INSERT INTO shipment_events (
            shipment_id, county_code, source, kind, status, raw_status, occurred_at,
            location, description, dedupe_key, actor_id, received_at
        )
        SELECT p_shipment, p_county, p_source, p_kind, g.s, g.raw, g.at, g.loc, g.descr, g.k,
               p_actor, p_now
          FROM (SELECT DISTINCT ON (u.k) u.*
                  FROM unnest(p_keys, p_statuses, p_raw, p_times, p_locations, p_descriptions)
                       WITH ORDINALITY AS u(k, s, raw, at, loc, descr, ord)
                 ORDER BY u.k, u.ord) g
         ORDER BY g.ord
        ON CONFLICT (shipment_id, dedupe_key) DO NOTHING
        RETURNING shipment_events.status AS s, shipment_events.occurred_at AS at
    )
    SELECT count(*)::integer AS n, array_agg(stored.s) AS statuses,
           array_agg(stored.at) AS times, max(stored.at) AS last
      INTO fresh
      FROM stored;
    new_events := fresh.n;
    status := p_status;
    delivered := false;
    IF fresh.n = 0 THEN
        RETURN;
    END IF;
    SELECT * INTO moved
      FROM tracking_fold(p_status, p_status_at, p_to_site, fresh.statuses, fresh.times);
    status := moved.status;
    delivered := moved.status = 'delivered' AND p_status <> 'delivered';
    UPDATE shipments sh
       SET status = moved.status,
           status_at = moved.status_at,
           last_event_at = greatest(sh.last_event_at, fresh.last),
           updated_at = p_now,
           next_poll_at = CASE WHEN moved.status IN ('delivered', 'returned', 'expired')
                               THEN NULL ELSE sh.next_poll_at END,
           delivered_at = coalesce(sh.delivered_at,
                                   CASE WHEN delivered THEN moved.status_at END)
     WHERE sh.id = p_shipment;
    IF delivered THEN
        -- The order's lock guards its fulfilments and the decision that all of them
        -- have arrived: of two last parcels arriving at once, the second to get it
        -- sees the first delivered (each statement here sees what was committed).
        PERFORM 1 FROM orders o WHERE o.id = p_order FOR UPDATE;
        SELECT bool_and(sh.status = 'delivered') AS all_in, max(sh.delivered_at) AS last
          INTO arrived
          FROM shipments sh
         WHERE sh.fulfilment_id = p_fulfilment;
        IF arrived.all_in THEN
            PERFORM orders_deliver_fulfilment(p_order, p_fulfilment,
                                              coalesce(arrived.last, p_now), p_now);
        END IF;
    END IF;
END
$$
"""

APPLY = """
CREATE OR REPLACE FUNCTION tracking_apply(
    p_shipment uuid, p_source text, p_kind text, p_actor uuid, p_now timestamptz,
    p_keys text[], p_statuses text[], p_raw text[], p_times timestamptz[],
    p_locations text[], p_descriptions text[],
    OUT new_events integer, OUT status text, OUT delivered boolean
) LANGUAGE plpgsql AS $$
DECLARE
    parcel record;
BEGIN
    SELECT sh.status, sh.status_at, sh.county_code, sh.order_id, sh.fulfilment_id,
           sh.pickup_site_id IS NOT NULL AND p_source <> 'manual' AS to_site
      INTO parcel
      FROM shipments sh
     WHERE sh.id = p_shipment;
    SELECT a.new_events, a.status, a.delivered INTO new_events, status, delivered
      FROM tracking_apply_locked(p_shipment, parcel.status, parcel.status_at,
                                 parcel.county_code, parcel.order_id, parcel.fulfilment_id,
                                 parcel.to_site, p_source, p_kind, p_actor, p_now, p_keys,
                                 p_statuses, p_raw, p_times, p_locations,
                                 p_descriptions) a;
END
$$
"""

RECEIVE = """
CREATE OR REPLACE FUNCTION tracking_receive(
    p_provider text, p_delivery_id text, p_tracking_number text,
    p_carrier text, p_number text, p_shipment uuid, p_now timestamptz,
    p_keys text[], p_statuses text[], p_raw text[], p_times timestamptz[],
    p_locations text[], p_descriptions text[],
    OUT outcome text, OUT shipment_id uuid, OUT new_events integer, OUT status text
) LANGUAGE plpgsql AS $$
DECLARE
    parcel record;
    applied record;
BEGIN
    new_events := 0;
    IF p_delivery_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM tracking_pushes t
         WHERE t.provider = p_provider AND t.delivery_id = p_delivery_id
    ) THEN
        outcome := 'duplicate';
        RETURN;
    END IF;
    IF p_shipment IS NOT NULL THEN
        SELECT sh.id, sh.status, sh.status_at, sh.county_code, sh.order_id, sh.fulfilment_id,
               sh.pickup_site_id IS NOT NULL AND p_provider <> 'manual' AS to_site
          INTO parcel
          FROM shipments sh WHERE sh.id = p_shipment FOR UPDATE;
    ELSE
        SELECT sh.id, sh.status, sh.status_at, sh.county_code, sh.order_id, sh.fulfilment_id,
               sh.pickup_site_id IS NOT NULL AND p_provider <> 'manual' AS to_site
          INTO parcel
          FROM shipments sh WHERE sh.carrier = p_carrier AND sh.tracking_number = p_number
           FOR UPDATE;
    END IF;
    IF parcel.id IS NULL THEN
        outcome := 'unknown-parcel';
    ELSE
        shipment_id := parcel.id;
        SELECT * INTO applied
          FROM tracking_apply_locked(parcel.id, parcel.status, parcel.status_at,
                                     parcel.county_code, parcel.order_id, parcel.fulfilment_id,
                                     parcel.to_site, p_provider, NULL, NULL, p_now, p_keys,
                                     p_statuses, p_raw, p_times, p_locations, p_descriptions);
        new_events := applied.new_events;
        status := applied.status;
        outcome := 'applied';
    END IF;
    IF p_delivery_id IS NOT NULL THEN
        INSERT INTO tracking_pushes (provider, delivery_id, tracking_number, outcome, received_at)
        VALUES (p_provider, p_delivery_id, p_tracking_number, outcome, p_now)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            -- The same delivery, applied by a concurrent request while this one waited
            -- for the parcel's lock: nothing was new for this one.
            outcome := 'duplicate';
        END IF;
    END IF;
END
$$
"""


def upgrade() -> None:
    op.execute(APPLY_LOCKED)
    op.execute(APPLY)
    op.execute(RECEIVE)


def downgrade() -> None:
    # The previous definitions, from the revision that wrote them.
    replace = ("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
    op.execute(earlier("0011").RECEIVE.replace(*replace))
    op.execute(earlier("0011").APPLY.replace(*replace))
    op.execute(
        "DROP FUNCTION tracking_apply_locked(uuid, text, timestamptz, text, uuid, uuid, boolean, "
        "text, text, uuid, timestamptz, text[], text[], text[], timestamptz[], text[], text[])"
    )
