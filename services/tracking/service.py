"""Shipments: registering parcels, applying provider and manual events, who sees what.

Every event, from a webhook, the poller or a person, goes through the SQL function
`tracking_apply_locked` (migration 0022, by way of `tracking_apply` or, for a
provider's report, `tracking_receive`): it stores the events not seen before (a digest
of source, status, time and place is unique per shipment, so the same scan
reported twice, or by the webhook and the poller at the same moment, is one row)
and moves the parcel's status by the rule of `rules.py`; when the last parcel of a
fulfilment arrives, it delivers the fulfilment in the same statement, with its
outbox record for attribution. A provider's push is that one statement
(`receive_pushed`), outside any transaction.

Locks are always taken shipment first, then order: the order's lock guards its
fulfilments and the decision that all of them have arrived.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    exists,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.db import DriverStatement, autocommit_driver
from services.errors import Conflict, Forbidden, Invalid, NotFound
from services.orders import service as orders
from services.orders.models import (
    DeliveryType,
    Fulfilment,
    Order,
    OrderStatus,
    PaymentMethod,
    PaymentStatus,
)
from services.pagination import Page, keyset_page
from services.payments import service as payments
from services.tracking import carriers
from services.tracking.models import (
    ACTIVE_STATUSES,
    EventSource,
    ManualEvent,
    Shipment,
    ShipmentEvent,
    Source,
)
from services.tracking.vocabulary import Checkpoint, TrackingStatus, TrackingUpdate
from services.users import access
from services.users.models import Role, User

S = TrackingStatus
# A manual event may be stamped a little ahead of our clock (a phone's clock), not more.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class ShipmentView:
    shipment: Shipment
    events: list[ShipmentEvent]


def _digest(*parts: object) -> str:
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def event_key(source: Source | EventSource, checkpoint: Checkpoint) -> str:
    """The same scan has the same key whether it came by webhook or by poll."""
    return _digest(
        source.value,
        checkpoint.raw_status,
        checkpoint.occurred_at.isoformat(),
        checkpoint.location,
    )


# --- registering a parcel --------------------------------------------------------------


async def create_shipment(
    session: AsyncSession,
    actor: User,
    fulfilment_id: uuid.UUID,
    *,
    carrier: str,
    tracking_number: str,
    provider: Source,
    poll_from: datetime | None,
    now: datetime,
) -> tuple[ShipmentView, bool]:
    """Register a parcel of a fulfilment; the first parcel ships the fulfilment and order.

    Registering the same parcel again for the same fulfilment returns it (a retried
    request); the same number under another fulfilment is a 409. Answers whether
    the shipment was created. `poll_from` is when the poller first asks about it
    (None: this provider is not polled here).
    """
    access.ensure_role(actor, Role.admin, Role.manager)
    found = await _fulfilment_order_id(session, fulfilment_id)
    if found is None:
        raise NotFound("No such fulfilment.")
    order_id, cooperative_id = found
    access.ensure_cooperative(actor, cooperative_id)
    code = carriers.get_carrier(carrier).code
    number = carriers.normalise_tracking_number(code, tracking_number)
    order = await orders.lock_order(session, order_id)
    fulfilment = await orders.fulfilment_of(session, order, fulfilment_id)
    # Checked under the order's lock: a retry racing its first attempt finds its parcel.
    existing = await _registered(session, code, number)
    if existing is not None:
        return await _same_parcel(session, existing, fulfilment_id), False
    if (
        order.payment_method is PaymentMethod.stripe
        and order.payment_status is PaymentStatus.unpaid
    ):
        raise Conflict("This order is not paid yet.", reason="order-not-paid")
    await orders.ship_fulfilment(session, order, fulfilment, actor_id=actor.id, now=now)
    shipment_id = (
        await session.execute(
            insert(Shipment)
            .values(
                id=uuid.uuid4(),
                fulfilment_id=fulfilment.id,
                order_id=order.id,
                cooperative_id=fulfilment.cooperative_id,
                county_code=fulfilment.county_code,
                carrier=code,
                tracking_number=number,
                provider=provider,
                status=S.pending,
                pickup_site_id=(
                    order.pickup_site_id if order.delivery_type is DeliveryType.pickup else None
                ),
                next_poll_at=poll_from,
                created_by=actor.id,
                created_at=now,
                updated_at=now,
            )
            # Another fulfilment may take the number at the same moment: one wins.
            .on_conflict_do_nothing(index_elements=[Shipment.carrier, Shipment.tracking_number])
            .returning(Shipment.id)
        )
    ).scalar_one_or_none()
    if shipment_id is None:
        taken = await _registered(session, code, number)
        assert taken is not None
        return await _same_parcel(session, taken, fulfilment_id), False
    shipment = await session.get(Shipment, shipment_id)
    assert shipment is not None
    return ShipmentView(shipment, []), True


async def _registered(session: AsyncSession, carrier: str, number: str) -> Shipment | None:
    return (
        await session.scalars(
            select(Shipment).where(Shipment.carrier == carrier, Shipment.tracking_number == number)
        )
    ).one_or_none()


async def _same_parcel(
    session: AsyncSession, existing: Shipment, fulfilment_id: uuid.UUID
) -> ShipmentView:
    if existing.fulfilment_id != fulfilment_id:
        raise Conflict(
            "This tracking number is registered for another parcel.",
            field="tracking_number",
            reason="tracking-number-taken",
        )
    return await _view(session, existing)


async def _fulfilment_order_id(
    session: AsyncSession, fulfilment_id: uuid.UUID
) -> tuple[uuid.UUID, uuid.UUID] | None:
    row = (
        await session.execute(
            select(Fulfilment.order_id, Fulfilment.cooperative_id).where(
                Fulfilment.id == fulfilment_id
            )
        )
    ).first()
    return None if row is None else (row[0], row[1])


# --- applying events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ingested:
    outcome: str  # applied, duplicate, unknown-parcel
    shipment_id: uuid.UUID | None = None
    new_events: int = 0
    status: TrackingStatus | None = None


def _report(
    checkpoints: list[tuple[str, Checkpoint]],
) -> dict[str, list[Any]]:
    """The events of a report as the columns `tracking_apply` and `tracking_receive` take."""
    return {
        "keys": [key for key, _ in checkpoints],
        "statuses": [c.status.value for _, c in checkpoints],
        "raw": [c.raw_status[:80] for _, c in checkpoints],
        "times": [c.occurred_at for _, c in checkpoints],
        "locations": [c.location for _, c in checkpoints],
        "descriptions": [c.description for _, c in checkpoints],
    }


# A provider's report in one statement (migrations 0011 and 0022): once per delivery id, the
# parcel locked, its unseen events stored, its status moved and, when its arrival
# completes a fulfilment, the fulfilment delivered.
_RECEIVE = text(
    "SELECT outcome, shipment_id, new_events, status "
    "FROM tracking_receive(:provider, :delivery_id, :tracking_number, :carrier, :number, "
    ":shipment, :now, :keys, :statuses, :raw, :times, :locations, :descriptions)"
)
# The same statement as the driver takes it ($1, $2, ...), with its parameters' order.
_RECEIVE_FOR_DRIVER = DriverStatement(_RECEIVE)
_APPLY = text(
    "SELECT new_events, status FROM tracking_apply(:shipment, :source, :kind, "
    ":actor, :now, :keys, :statuses, :raw, :times, :locations, :descriptions)"
)


def _receive_params(
    update: TrackingUpdate, *, now: datetime, shipment_id: uuid.UUID | None
) -> dict[str, Any]:
    source = Source(update.provider)
    return {
        "provider": source.value,
        "delivery_id": update.delivery_id,
        "tracking_number": update.tracking_number[:40],
        "carrier": update.carrier,
        "number": carriers.clean_tracking_number(update.tracking_number),
        "shipment": shipment_id,
        "now": now,
        **_report([(event_key(source, c), c) for c in update.checkpoints]),
    }


def _ingested(outcome: str, shipment_id: Any, new_events: int, status: str | None) -> Ingested:
    if outcome != "applied" or status is None:
        return Ingested(outcome)
    return Ingested("applied", shipment_id, new_events, TrackingStatus(status))


async def receive_update(
    session: AsyncSession,
    update: TrackingUpdate,
    *,
    now: datetime,
    shipment_id: uuid.UUID | None = None,
) -> Ingested:
    """Apply what a provider pushed (or, for `shipment_id`, answered a poll) exactly once,
    in the session's transaction."""
    row = (
        await session.execute(_RECEIVE, _receive_params(update, now=now, shipment_id=shipment_id))
    ).one()
    return _ingested(row.outcome, row.shipment_id, row.new_events, row.status)


async def receive_pushed(
    factory: async_sessionmaker[AsyncSession], update: TrackingUpdate, *, now: datetime
) -> Ingested:
    """Apply a provider's push exactly once, in one statement outside any transaction.

    The statement is atomic by itself (a delivery that completes a fulfilment
    delivers it, with its outbox record), so a push costs one round trip.
    """
    params = _receive_params(update, now=now, shipment_id=None)
    async with autocommit_driver(factory) as driver:
        row = await driver.fetchrow(_RECEIVE_FOR_DRIVER.sql, *_RECEIVE_FOR_DRIVER.args(params))
    return _ingested(row["outcome"], row["shipment_id"], row["new_events"], row["status"])


# A parcel's state is read as a row for the sweep of silent parcels.
_SHIPMENTS = cast(Table, Shipment.__table__)
_PARCEL = select(_SHIPMENTS.c.id, _SHIPMENTS.c.status)


async def _apply(
    session: AsyncSession,
    parcel: Any,
    checkpoints: list[tuple[str, Checkpoint]],
    *,
    source: Source | EventSource,
    kind: ManualEvent | None,
    actor_id: uuid.UUID | None,
    now: datetime,
) -> tuple[int, TrackingStatus]:
    """Store the events not seen before and move the parcel; the caller holds its lock.

    `parcel` is a row of `_PARCEL` or a Shipment (read for its id and status). Answers
    how many events were new and the parcel's status after them.
    """
    if not checkpoints:
        return 0, TrackingStatus(parcel.status)
    row = (
        await session.execute(
            _APPLY,
            {
                "shipment": parcel.id,
                "source": source.value,
                "kind": kind.value if kind is not None else None,
                "actor": actor_id,
                "now": now,
                **_report(checkpoints),
            },
        )
    ).one()
    return row.new_events, TrackingStatus(row.status)


# --- silent parcels ------------------------------------------------------------------------

EXPIRED_RAW = "marketplace:no-news"


async def expire_silent(
    session: AsyncSession, *, now: datetime, silent_for: timedelta, limit: int = 500
) -> int:
    """Mark `expired` the open parcels without news for `silent_for`; answer how many.

    As AfterShip does for its own parcels (no news for 30 days), so that Kuaidi100 and
    manual parcels also stop being polled. The expiry is an event of the timeline
    (source `system`), so the status still follows the events: a later scan, a
    delivery or a return moves the parcel on as usual. Locked parcels (a push being
    applied right now) are left for the next run.
    """
    cutoff = now - silent_for
    parcels = (
        await session.execute(
            _PARCEL.where(
                _SHIPMENTS.c.status.in_(ACTIVE_STATUSES),
                func.coalesce(_SHIPMENTS.c.last_event_at, _SHIPMENTS.c.created_at) < cutoff,
            )
            .order_by(_SHIPMENTS.c.created_at, _SHIPMENTS.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    days = silent_for.total_seconds() / 86_400
    for parcel in parcels:
        checkpoint = Checkpoint(
            status=S.expired,
            raw_status=EXPIRED_RAW,
            occurred_at=now,
            description=f"No news for {days:g} days: tracking stopped.",
        )
        await _apply(
            session,
            parcel,
            [(event_key(EventSource.system, checkpoint), checkpoint)],
            source=EventSource.system,
            kind=None,
            actor_id=None,
            now=now,
        )
    return len(parcels)


# --- manual events -----------------------------------------------------------------------

_MANUAL_STATUS = {
    ManualEvent.handed_over: S.in_transit,
    ManualEvent.received_at_site: S.available_for_pickup,
    ManualEvent.picked_up: S.delivered,
    ManualEvent.delivered: S.delivered,
    ManualEvent.failed_attempt: S.failed_attempt,
    # The courier or the site takes the cash as it hands the parcel over.
    ManualEvent.cash_collected: S.delivered,
    ManualEvent.refused: S.returned,
}

_MAY_RECORD = {
    Role.manager: frozenset(
        {
            ManualEvent.handed_over,
            ManualEvent.delivered,
            ManualEvent.failed_attempt,
            ManualEvent.cash_collected,
            ManualEvent.refused,
        }
    ),
    Role.site_operator: frozenset(
        {
            ManualEvent.received_at_site,
            ManualEvent.picked_up,
            ManualEvent.failed_attempt,
            ManualEvent.cash_collected,
            ManualEvent.refused,
        }
    ),
    Role.admin: frozenset(ManualEvent),
}

_AT_SITE_ONLY = frozenset({ManualEvent.received_at_site, ManualEvent.picked_up})


@dataclass(frozen=True, slots=True)
class ManualReport:
    kind: ManualEvent
    occurred_at: datetime | None = None
    location: str | None = None
    note: str | None = None
    amount_fen: int | None = None
    idempotency_key: str | None = None


async def record_manual_event(
    session: AsyncSession,
    actor: User,
    shipment_id: uuid.UUID,
    report: ManualReport,
    *,
    now: datetime,
) -> tuple[ShipmentView, bool]:
    """Record what a manager or site operator saw; answers whether it was new.

    Cash collected records the cash-on-delivery payment; a refused parcel of an
    unpaid cash-on-delivery order cancels the order and returns its stock.
    """
    shipment = await _locked(session, shipment_id)
    await _ensure_visible(session, actor, shipment)
    if report.kind not in _MAY_RECORD.get(actor.role, frozenset()):
        raise Forbidden(f"Your role does not record '{report.kind.value}' events.")
    if report.kind in _AT_SITE_ONLY and shipment.pickup_site_id is None:
        raise Conflict(
            "This parcel goes to the buyer's door, not to a service site.",
            field="kind",
            reason="not-a-pickup-parcel",
        )
    at = report.occurred_at or now
    if at > now + CLOCK_SKEW:
        raise Invalid("An event cannot happen in the future.", field="occurred_at")
    if report.kind is ManualEvent.cash_collected and report.amount_fen is None:
        raise Invalid("Say how much cash was collected.", field="amount_fen")
    key = (
        _digest("manual-key", report.idempotency_key)
        if report.idempotency_key
        else _digest("manual", report.kind.value, at.isoformat(), report.location)
    )
    checkpoint = Checkpoint(
        status=_MANUAL_STATUS[report.kind],
        raw_status=f"manual:{report.kind.value}",
        occurred_at=at,
        location=report.location,
        description=report.note,
    )
    # Money first: a cash report that cannot be applied (wrong amount, a card order)
    # must leave no event behind.
    if report.kind is ManualEvent.cash_collected and not await _seen(session, shipment, key):
        assert report.amount_fen is not None
        order = await payments.record_cash_collected(
            session, shipment.order_id, amount=report.amount_fen, now=now
        )
        for fulfilment_id in await orders.delivered_fulfilments(session, order.id):
            await orders.request_recognition(session, fulfilment_id)
    new, _ = await _apply(
        session,
        shipment,
        [(key, checkpoint)],
        source=Source.manual,
        kind=report.kind,
        actor_id=actor.id,
        now=now,
    )
    if new and report.kind is ManualEvent.refused:
        await _refused(session, actor, shipment, reason=report.note or "parcel refused", now=now)
    return await _view(session, shipment), bool(new)


async def _seen(session: AsyncSession, shipment: Shipment, key: str) -> bool:
    return bool(
        await session.scalar(
            select(
                exists().where(
                    ShipmentEvent.shipment_id == shipment.id, ShipmentEvent.dedupe_key == key
                )
            )
        )
    )


async def _refused(
    session: AsyncSession, actor: User, shipment: Shipment, *, reason: str, now: datetime
) -> None:
    order = await orders.lock_order(session, shipment.order_id)
    if (
        order.payment_method is PaymentMethod.cod
        and order.payment_status is PaymentStatus.unpaid
        and order.status is not OrderStatus.cancelled
    ):
        await payments.record_cash_refused(
            session, order.id, reason=reason, actor_id=actor.id, now=now
        )
    # A paid order's refused parcel comes back; its refund is the manager's decision.


# --- reading -----------------------------------------------------------------------------


async def _locked(session: AsyncSession, shipment_id: uuid.UUID) -> Shipment:
    shipment = (
        await session.scalars(
            select(Shipment)
            .where(Shipment.id == shipment_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if shipment is None:
        raise NotFound("No such shipment.")
    return shipment


async def _ensure_visible(session: AsyncSession, actor: User, shipment: Shipment) -> None:
    """Buyers see their orders' parcels, managers their cooperative's, operators their site's."""
    if actor.role is Role.admin:
        return
    if actor.role is Role.manager and actor.cooperative_id == shipment.cooperative_id:
        return
    if actor.role is Role.site_operator and (
        shipment.pickup_site_id is not None and actor.site_id == shipment.pickup_site_id
    ):
        return
    if actor.role is Role.buyer:
        buyer_id = await session.scalar(select(Order.buyer_id).where(Order.id == shipment.order_id))
        if buyer_id == actor.id:
            return
    raise NotFound("No such shipment.")


async def _events(session: AsyncSession, shipment_ids: list[uuid.UUID]) -> list[ShipmentEvent]:
    if not shipment_ids:
        return []
    return list(
        (
            await session.scalars(
                select(ShipmentEvent)
                .where(ShipmentEvent.shipment_id.in_(shipment_ids))
                .order_by(ShipmentEvent.occurred_at, ShipmentEvent.id)
            )
        ).all()
    )


async def _view(session: AsyncSession, shipment: Shipment) -> ShipmentView:
    await session.refresh(shipment)
    return ShipmentView(shipment, await _events(session, [shipment.id]))


async def get_for(session: AsyncSession, actor: User, shipment_id: uuid.UUID) -> ShipmentView:
    shipment = await session.get(Shipment, shipment_id, populate_existing=True)
    if shipment is None:
        raise NotFound("No such shipment.")
    await _ensure_visible(session, actor, shipment)
    return ShipmentView(shipment, await _events(session, [shipment.id]))


async def tracking_for(
    session: AsyncSession, actor: User, order_id: uuid.UUID
) -> tuple[Order, list[ShipmentView]]:
    """An order's parcels, each with its timeline ordered by when things happened."""
    shown = await orders.get_for(session, actor, order_id)
    fulfilment_ids = [f.id for f in shown.fulfilments]
    shipments = list(
        (
            await session.scalars(
                select(Shipment)
                .where(Shipment.order_id == order_id, Shipment.fulfilment_id.in_(fulfilment_ids))
                .order_by(Shipment.created_at, Shipment.id)
            )
        ).all()
    )
    events = await _events(session, [s.id for s in shipments])
    by_shipment: dict[uuid.UUID, list[ShipmentEvent]] = {}
    for event in events:
        by_shipment.setdefault(event.shipment_id, []).append(event)
    return shown.order, [ShipmentView(s, by_shipment.get(s.id, [])) for s in shipments]


def attention_reason(shipment: Shipment) -> str:
    if shipment.status in (S.exception, S.failed_attempt, S.returned, S.expired):
        return shipment.status.value
    return "no-news"


async def needing_attention(
    session: AsyncSession,
    actor: User,
    cooperative_id: uuid.UUID,
    *,
    stale_before: datetime,
    limit: int,
    cursor: str | None,
) -> Page[Shipment]:
    """Parcels in trouble (exception, failed attempt, returned or expired on a live order)
    or silent."""
    access.ensure_role(actor, Role.admin, Role.manager)
    access.ensure_cooperative(actor, cooperative_id)
    live_order = exists().where(
        Order.id == Shipment.order_id, Order.status != OrderStatus.cancelled
    )
    last_news = Shipment.last_event_at.is_(None)
    stmt = select(Shipment).where(
        Shipment.cooperative_id == cooperative_id,
        or_(
            Shipment.status.in_([S.exception, S.failed_attempt]),
            and_(Shipment.status.in_([S.returned, S.expired]), live_order),
            and_(
                Shipment.status.in_(ACTIVE_STATUSES),
                or_(
                    and_(last_news, Shipment.created_at < stale_before),
                    Shipment.last_event_at < stale_before,
                ),
            ),
        ),
    )
    return await keyset_page(
        session,
        stmt,
        order=[Shipment.created_at, Shipment.id],
        kind="shipment-alerts",
        cursor=cursor,
        limit=limit,
        descending=False,
    )


async def at_site(
    session: AsyncSession,
    actor: User,
    site_id: uuid.UUID,
    *,
    status: TrackingStatus | None,
    limit: int,
    cursor: str | None,
) -> Page[Shipment]:
    """The parcels addressed to a village service site, for its operator."""
    access.ensure_role(actor, Role.admin, Role.site_operator)
    access.ensure_site(actor, site_id)
    stmt = select(Shipment).where(Shipment.pickup_site_id == site_id)
    if status is not None:
        stmt = stmt.where(Shipment.status == status)
    return await keyset_page(
        session,
        stmt,
        order=[Shipment.created_at, Shipment.id],
        kind="site-parcels",
        cursor=cursor,
        limit=limit,
        descending=True,
    )
