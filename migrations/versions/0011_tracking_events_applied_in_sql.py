"""Tracking events applied in SQL: a push, a poll or a manual event is one statement

A provider's push used to cost six round trips (begin, inbox, parcel lock, events,
status, commit) and more when it delivered a parcel; `tracking_receive` does it in
one statement, sent outside any transaction, atomic by itself.

- `tracking_progress(status)`: a status's place along a normal journey.
- `tracking_fold(status, status_at, to_site, statuses, times)`: the parcel's status
  after some new events, by the rule of `services.tracking.rules` (a return wins,
  then a delivery, then the latest event by its own time, ties by progress; to a
  village site, a carrier's delivery means waiting for pickup). Pure; a property
  test holds it equal to the Python rule.
- `orders_deliver_fulfilment(order, fulfilment, delivered_at, now)`: every parcel
  of a shipped fulfilment arrived: it is delivered, with its outbox job for
  attribution (`attribution.recognise_fulfilment`, deduplicated like
  `services.jobs.service.enqueue`), and the order with its last fulfilment (with
  its history row). The caller holds the order's lock.
- `tracking_apply(shipment, source, kind, actor, now, keys, statuses, raw, times,
  locations, descriptions)`: stores the events the parcel has not seen (by dedupe
  key) and moves the parcel; the caller holds the parcel's lock. When the parcel
  is newly delivered, the order is locked (parcel first, then order, everywhere)
  and, if every parcel of the fulfilment has arrived, the fulfilment is delivered.
- `tracking_receive(provider, delivery_id, tracking_number, carrier, number,
  shipment, now, <the event arrays>)`: a provider's report, once per delivery id
  (the inbox row is written with what it did, after it), for the parcel named by
  carrier and number (a push) or by id (a poll).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 09:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Progress along a normal journey (rules._PROGRESS), only to break ties in time.
PROGRESS = """
CREATE FUNCTION tracking_progress(p_status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_position(
        ARRAY['pending', 'expired', 'info_received', 'in_transit', 'exception',
              'failed_attempt', 'out_for_delivery', 'available_for_pickup', 'delivered',
              'returned'],
        p_status)
$$
"""

FOLD = """
CREATE FUNCTION tracking_fold(
    p_status text, p_status_at timestamptz, p_to_site boolean,
    p_statuses text[], p_times timestamptz[],
    OUT status text, OUT status_at timestamptz
) LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    f record;
BEGIN
    status := p_status;
    status_at := p_status_at;
    IF p_status = 'returned' THEN
        RETURN;
    END IF;
    SELECT min(e.at) FILTER (WHERE e.s = 'returned') AS returned_at,
           min(e.at) FILTER (WHERE e.s = 'delivered') AS delivered_at,
           (array_agg(e.s ORDER BY e.at DESC, tracking_progress(e.s) DESC))[1] AS top,
           max(e.at) AS top_at
      INTO f
      FROM (SELECT CASE WHEN p_to_site AND u.s = 'delivered' THEN 'available_for_pickup'
                        ELSE u.s END AS s,
                   u.at
              FROM unnest(p_statuses, p_times) AS u(s, at)) e;
    IF f.returned_at IS NOT NULL THEN
        status := 'returned';
        status_at := f.returned_at;
    ELSIF p_status = 'delivered' THEN
        RETURN;
    ELSIF f.delivered_at IS NOT NULL THEN
        status := 'delivered';
        status_at := f.delivered_at;
    ELSIF f.top IS NOT NULL AND (
        p_status_at IS NULL
        OR (f.top_at, tracking_progress(f.top))
           > (p_status_at, tracking_progress(p_status))
    ) THEN
        status := f.top;
        status_at := f.top_at;
    END IF;
END
$$
"""

DELIVER = """
CREATE FUNCTION orders_deliver_fulfilment(
    p_order uuid, p_fulfilment uuid, p_delivered_at timestamptz, p_now timestamptz
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE fulfilments
       SET status = 'delivered', delivered_at = p_delivered_at, updated_at = p_now
     WHERE id = p_fulfilment AND order_id = p_order AND status = 'shipped';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO jobs (kind, payload, dedupe_key)
    VALUES ('attribution.recognise_fulfilment',
            jsonb_build_object('fulfilment_id', p_fulfilment::text), p_fulfilment::text)
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

APPLY = """
CREATE FUNCTION tracking_apply(
    p_shipment uuid, p_source text, p_kind text, p_actor uuid, p_now timestamptz,
    p_keys text[], p_statuses text[], p_raw text[], p_times timestamptz[],
    p_locations text[], p_descriptions text[],
    OUT new_events integer, OUT status text, OUT delivered boolean
) LANGUAGE plpgsql AS $$
DECLARE
    parcel record;
    fresh record;
    moved record;
    arrived record;
BEGIN
    SELECT sh.status, sh.status_at, sh.county_code, sh.order_id, sh.fulfilment_id,
           sh.pickup_site_id IS NOT NULL AND p_source <> 'manual' AS to_site
      INTO parcel
      FROM shipments sh
     WHERE sh.id = p_shipment;
    -- The events this parcel has not seen, each key once, in the order reported.
    SELECT count(*)::integer AS n,
           array_agg(g.k ORDER BY g.ord) AS keys,
           array_agg(g.s ORDER BY g.ord) AS statuses,
           array_agg(g.raw ORDER BY g.ord) AS raw,
           array_agg(g.at ORDER BY g.ord) AS times,
           array_agg(g.loc ORDER BY g.ord) AS locations,
           array_agg(g.descr ORDER BY g.ord) AS descriptions
      INTO fresh
      FROM (SELECT DISTINCT ON (u.k) u.*
              FROM unnest(p_keys, p_statuses, p_raw, p_times, p_locations, p_descriptions)
                   WITH ORDINALITY AS u(k, s, raw, at, loc, descr, ord)
             ORDER BY u.k, u.ord) g
     WHERE NOT EXISTS (
        SELECT 1 FROM shipment_events e
         WHERE e.shipment_id = p_shipment AND e.dedupe_key = g.k::bpchar
     );
    new_events := fresh.n;
    status := parcel.status;
    delivered := false;
    IF fresh.n = 0 THEN
        RETURN;
    END IF;
    SELECT * INTO moved
      FROM tracking_fold(parcel.status, parcel.status_at, parcel.to_site,
                         fresh.statuses, fresh.times);
    status := moved.status;
    delivered := moved.status = 'delivered' AND parcel.status <> 'delivered';
    INSERT INTO shipment_events (
        shipment_id, county_code, source, kind, status, raw_status, occurred_at,
        location, description, dedupe_key, actor_id, received_at
    )
    SELECT p_shipment, parcel.county_code, p_source, p_kind, u.s, u.raw, u.at,
           u.loc, u.descr, u.k, p_actor, p_now
      FROM unnest(fresh.keys, fresh.statuses, fresh.raw, fresh.times,
                  fresh.locations, fresh.descriptions)
           WITH ORDINALITY AS u(k, s, raw, at, loc, descr, ord)
     ORDER BY u.ord
    ON CONFLICT (shipment_id, dedupe_key) DO NOTHING;
    UPDATE shipments sh
       SET status = moved.status,
           status_at = moved.status_at,
           last_event_at = greatest(sh.last_event_at, (SELECT max(t) FROM unnest(fresh.times) t)),
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
        PERFORM 1 FROM orders o WHERE o.id = parcel.order_id FOR UPDATE;
        SELECT bool_and(sh.status = 'delivered') AS all_in, max(sh.delivered_at) AS last
          INTO arrived
          FROM shipments sh
         WHERE sh.fulfilment_id = parcel.fulfilment_id;
        IF arrived.all_in THEN
            PERFORM orders_deliver_fulfilment(parcel.order_id, parcel.fulfilment_id,
                                              coalesce(arrived.last, p_now), p_now);
        END IF;
    END IF;
END
$$
"""

RECEIVE = """
CREATE FUNCTION tracking_receive(
    p_provider text, p_delivery_id text, p_tracking_number text,
    p_carrier text, p_number text, p_shipment uuid, p_now timestamptz,
    p_keys text[], p_statuses text[], p_raw text[], p_times timestamptz[],
    p_locations text[], p_descriptions text[],
    OUT outcome text, OUT shipment_id uuid, OUT new_events integer, OUT status text
) LANGUAGE plpgsql AS $$
DECLARE
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
        SELECT sh.id INTO shipment_id FROM shipments sh WHERE sh.id = p_shipment FOR UPDATE;
    ELSE
        SELECT sh.id INTO shipment_id
          FROM shipments sh WHERE sh.carrier = p_carrier AND sh.tracking_number = p_number
           FOR UPDATE;
    END IF;
    IF shipment_id IS NULL THEN
        outcome := 'unknown-parcel';
    ELSE
        SELECT * INTO applied
          FROM tracking_apply(shipment_id, p_provider, NULL, NULL, p_now, p_keys, p_statuses,
                              p_raw, p_times, p_locations, p_descriptions);
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
    op.execute(PROGRESS)
    op.execute(FOLD)
    op.execute(DELIVER)
    op.execute(APPLY)
    op.execute(RECEIVE)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION tracking_receive(text, text, text, text, text, uuid, timestamptz, "
        "text[], text[], text[], timestamptz[], text[], text[])"
    )
    op.execute(
        "DROP FUNCTION tracking_apply(uuid, text, text, uuid, timestamptz, text[], text[], "
        "text[], timestamptz[], text[], text[])"
    )
    op.execute("DROP FUNCTION orders_deliver_fulfilment(uuid, uuid, timestamptz, timestamptz)")
    op.execute("DROP FUNCTION tracking_fold(text, timestamptz, boolean, text[], timestamptz[])")
    op.execute("DROP FUNCTION tracking_progress(text)")
