"""PaymentIntents for orders, Stripe events applied forward-only, and refunds.

A Stripe call never happens inside a transaction that holds stock or order
locks on the buyer's path: checkout commits the order first, then asks Stripe
for the intent (with the idempotency key `order:{id}:pi`, so a retry never makes
a second one), then records it. Refunds are written first (pending, with a job
in the outbox) and executed against Stripe by that job, or inline at once.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, exists, false, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services import money
from services.db import autocommit_driver, transaction, utcnow
from services.errors import Conflict, Invalid, NotFound, Unavailable
from services.idempotency import service as idempotency
from services.ledger import service as ledger
from services.orders import service as orders
from services.orders.models import Order, OrderLine, OrderStatus, PaymentMethod, PaymentStatus
from services.payments.models import (
    Payment,
    PaymentState,
    Provider,
    Refund,
    RefundState,
    StripeEvent,
)
from services.payments.stripe import Event, Intent, ProviderError, ProviderRejected, StripeGateway
from services.users import access
from services.users.models import Role, User

logger = logging.getLogger(__name__)

REFUND_JOB = "payments.execute_refund"
CANCEL_INTENT_JOB = "payments.cancel_intent"


def intent_key(order_id: uuid.UUID) -> str:
    return f"order:{order_id}:pi"


async def payment_of(session: AsyncSession, order_id: uuid.UUID, *, lock: bool = False) -> Payment:
    stmt = (
        select(Payment)
        .where(Payment.order_id == order_id)
        .execution_options(populate_existing=True)
    )
    if lock:
        stmt = stmt.with_for_update()
    payment = (await session.scalars(stmt)).one_or_none()
    if payment is None:
        raise NotFound("This order has no payment.")
    return payment


async def request_intent(gateway: StripeGateway, order: Order) -> Intent:
    """Ask Stripe for the order's PaymentIntent; the same order always gets the same one."""
    return await gateway.create_payment_intent(
        amount=order.total_fen,
        currency=order.currency,
        metadata={"order_id": str(order.id)},
        idempotency_key=intent_key(order.id),
    )


async def record_intent(session: AsyncSession, order_id: uuid.UUID, intent: Intent) -> Payment:
    payment = await payment_of(session, order_id, lock=True)
    if payment.provider_payment_id is None:
        payment.provider_payment_id = intent.id
    elif payment.provider_payment_id != intent.id:
        raise Conflict("This order is bound to another PaymentIntent.", reason="intent-mismatch")
    # Written now: later reads use populate_existing and would drop an unflushed change.
    await session.flush()
    return payment


@dataclass(frozen=True, slots=True)
class Bound:
    """What `bind_intent` found under the order's lock."""

    status: OrderStatus | None  # the order's status; None: no such order
    bound: bool  # the payment is bound to the intent and the key keeps the answer


# The order's lock first (as every path that locks an order and its payment), then the
# payment's row: UPDATE ... FROM the locked order takes the payment's lock only once the
# join has the order. Only an order still awaiting payment binds; updated_at moves only
# when the intent is new. The key keeps its answer (`idempotency.complete`'s update)
# only when the payment is bound, so that nothing is written when something else is due.
_BIND_INTENT = f"""
WITH o AS (SELECT id, status FROM orders WHERE id = $1 FOR UPDATE),
bound AS (
    UPDATE payments p
       SET provider_payment_id = $2,
           updated_at = CASE WHEN p.provider_payment_id IS NULL THEN now() ELSE p.updated_at END
      FROM o
     WHERE p.order_id = o.id AND coalesce(p.provider_payment_id, $2) = $2
       AND o.status = 'awaiting_payment'
    RETURNING p.id
),
answered AS ({idempotency.complete_sql(3, only_if="EXISTS (SELECT FROM bound)")})
SELECT (SELECT o.status FROM o) AS status, EXISTS (SELECT FROM bound) AS bound
"""  # noqa: S608 (our own fixed text)


async def bind_intent(
    driver: Any,
    order_id: uuid.UUID,
    intent_id: str,
    *,
    owner_id: uuid.UUID,
    key: str,
    status: int,
    body: str,
    now: datetime,
) -> Bound:
    """For the request that just placed the order: `record_intent` and
    `idempotency.complete` in one statement, on a driver connection (`autocommit_driver`:
    one round trip, no transaction of its own to begin and commit).

    Locks the order; while it awaits payment, binds its payment to the intent and keeps
    `body` as the key's answer. Writes nothing otherwise: when the order is no longer
    awaiting payment, or its payment is missing or bound to another intent, the caller
    takes `lock_order` and `record_intent`, which say why.
    """
    row = await driver.fetchrow(
        _BIND_INTENT, order_id, intent_id, owner_id, key, status, body, now, None
    )
    found = row["status"]
    return Bound(None if found is None else OrderStatus(found), row["bound"])


# --- Stripe events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    duplicate: bool
    outcome: str


async def receive(
    factory: async_sessionmaker[AsyncSession], event: Event, *, now: datetime, enqueue: Any
) -> Received:
    """Store a verified event once and apply it forward-only.

    The usual `payment_intent.succeeded` (its payment found by the intent, pending,
    the order awaiting payment) is one statement outside any transaction
    (`stripe_intent_succeeded`, migrations 0012, 0013 and 0021, atomic by itself);
    every other event, and a succeeded one that is not the usual case, is applied by
    `receive_event` in a transaction.
    """
    intent_id = _intent_id(event.object)
    if event.type == "payment_intent.succeeded" and intent_id:
        async with autocommit_driver(factory) as driver:
            outcome = await driver.fetchval(
                _INTENT_SUCCEEDED,
                event.id,
                event.type,
                event.object_id,
                event.created,
                event.livemode,
                event.body if event.body is not None else json.dumps(event.payload),
                intent_id,
                _amount_received(event.object),
                now,
            )
        if outcome != "deferred":
            return Received(duplicate=outcome == "duplicate", outcome=outcome)
    async with transaction(factory) as session:
        return await receive_event(session, event, now=now, enqueue=enqueue)


_INTENT_SUCCEEDED = "SELECT stripe_intent_succeeded($1, $2, $3, $4, $5, $6, $7, $8, $9)"


def _intent_id(obj: dict[str, Any]) -> str | None:
    intent_id = (
        obj.get("id") if obj.get("object") == "payment_intent" else obj.get("payment_intent")
    )
    return str(intent_id) if intent_id else None


def _amount_received(obj: dict[str, Any]) -> int:
    return int(obj.get("amount_received") or obj.get("amount") or 0)


async def receive_event(
    session: AsyncSession, event: Event, *, now: datetime, enqueue: Any
) -> Received:
    """Store the event once by its id and apply it in the same transaction.

    `enqueue(session, kind, payload, dedupe_key=...)` puts follow-up work (a refund
    for a payment that arrived after its order expired) in the outbox.
    """
    inserted = (
        await session.execute(
            _STORE_EVENT,
            {
                "id": event.id,
                "type": event.type,
                "object_id": event.object_id,
                "created": event.created,
                "livemode": event.livemode,
                "payload": event.payload,
                "outcome": "received",
                "received_at": now,
            },
        )
    ).first()
    if inserted is None:
        return Received(duplicate=True, outcome="duplicate")
    handler = _HANDLERS.get(event.type)
    if handler is not None:
        await _lock_order_of(session, event.object)
    outcome = "ignored" if handler is None else await handler(session, event, now, enqueue)
    if outcome != "received":
        await session.execute(_EVENT_OUTCOME, {"b_id": event.id, "b_outcome": outcome})
    return Received(duplicate=False, outcome=outcome)


# Built once, their values bound at execution: building `.values(...)` with the event's
# payload on every request cost more Python than executing the statement.
_EVENTS = cast(Table, StripeEvent.__table__)
_STORE_EVENT = (
    insert(_EVENTS).on_conflict_do_nothing(index_elements=[_EVENTS.c.id]).returning(_EVENTS.c.id)
)
_EVENT_OUTCOME = (
    update(_EVENTS)
    .where(_EVENTS.c.id == bindparam("b_id"))
    .values(outcome=bindparam("b_outcome", type_=_EVENTS.c.outcome.type))
)


async def _lock_order_of(session: AsyncSession, obj: dict[str, Any]) -> None:
    """Lock the order an event is about before any row of its payment or refunds.

    Every path that changes an order and its payment or refunds (checkout, cancel,
    expiry, refunds, cash collection, the ledger) locks the order first; an event
    locking its payment first and then the order would deadlock with them. The
    order a payment or refund belongs to never changes, so reading it unlocked is
    safe; an event naming nothing we know locks nothing, and its handler says so.
    """
    order_id: uuid.UUID | None = None
    intent_id = _intent_id(obj)
    if intent_id:
        order_id = await session.scalar(
            select(Payment.order_id).where(Payment.provider_payment_id == intent_id)
        )
    if order_id is None and obj.get("object") == "refund":
        ours = _uuid((obj.get("metadata") or {}).get("refund_id"))
        order_id = await session.scalar(
            select(Refund.order_id).where(
                (Refund.provider_refund_id == str(obj.get("id")))
                | (Refund.id == ours if ours else false())
            )
        )
    if order_id is None:
        order_id = _uuid((obj.get("metadata") or {}).get("order_id"))
    if order_id is not None:
        await session.execute(select(Order.id).where(Order.id == order_id).with_for_update())


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


async def _payment_for_intent(session: AsyncSession, obj: dict[str, Any]) -> Payment | None:
    intent_id = _intent_id(obj)
    if not intent_id:
        return None
    payment = (
        await session.scalars(
            select(Payment)
            .where(Payment.provider_payment_id == intent_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if payment is None:
        # The intent may be recorded after Stripe already reported on it: find it by order.
        order_id = _uuid((obj.get("metadata") or {}).get("order_id"))
        if order_id:
            try:
                payment = await payment_of(session, order_id, lock=True)
            except NotFound:
                return None
            if payment.provider_payment_id not in (None, intent_id):
                return None
            payment.provider_payment_id = intent_id
    return payment


async def _on_succeeded(session: AsyncSession, event: Event, now: datetime, enqueue: Any) -> str:
    payment = await _payment_for_intent(session, event.object)
    if payment is None:
        return "unknown-intent"
    if payment.state is PaymentState.succeeded:
        return "already-succeeded"
    order = await orders.lock_order(session, payment.order_id)
    amount = _amount_received(event.object)
    payment.state = PaymentState.succeeded
    payment.succeeded_at = event.created
    if order.status is OrderStatus.awaiting_payment:
        await orders.confirm_paid(session, order, amount=amount, now=now)
        return "order-confirmed"
    # The money arrived for an order that is no longer waiting (it expired or was
    # cancelled meanwhile): record it, and give it straight back.
    order.paid_fen = amount
    order.paid_at = event.created
    order.payment_status = PaymentStatus.paid
    refund = await _new_refund(
        session,
        order,
        payment,
        amount=amount,
        reason="payment arrived after the order was cancelled",
        actor=None,
        allocation=[],
    )
    await enqueue(
        session, REFUND_JOB, {"refund_id": str(refund.id)}, dedupe_key=f"refund:{refund.id}"
    )
    return "late-payment-refunded"


async def _on_failed(session: AsyncSession, event: Event, now: datetime, enqueue: Any) -> str:
    payment = await _payment_for_intent(session, event.object)
    if payment is None:
        return "unknown-intent"
    if payment.state is not PaymentState.pending:
        return "stale"  # a failure reported after the payment succeeded changes nothing
    error = event.object.get("last_payment_error") or {}
    payment.failures += 1
    payment.last_failure = str(error.get("message") or error.get("code") or "payment failed")
    # The buyer may try another card until the reservation expires.
    return "failure-recorded"


async def _on_canceled(session: AsyncSession, event: Event, now: datetime, enqueue: Any) -> str:
    payment = await _payment_for_intent(session, event.object)
    if payment is None:
        return "unknown-intent"
    if payment.state is not PaymentState.pending:
        return "stale"
    payment.state = PaymentState.canceled
    order = await orders.lock_order(session, payment.order_id)
    if order.status is OrderStatus.awaiting_payment:
        await orders.cancel(
            session, order, reason="payment intent canceled", actor_id=None, now=now
        )
        return "order-cancelled"
    return "payment-canceled"


async def _refund_for(session: AsyncSession, obj: dict[str, Any]) -> Refund | None:
    """Our refund behind a Stripe refund object: by Stripe's id, else by the id we sent.

    Stripe's event can come before its answer to our own call (or instead of it,
    when the answer was lost): the metadata then says which refund it is.
    """
    stripe_id = str(obj.get("id"))
    refund = (
        await session.scalars(
            select(Refund)
            .where(Refund.provider_refund_id == stripe_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if refund is not None:
        return refund
    refund_id = _uuid((obj.get("metadata") or {}).get("refund_id"))
    if refund_id is not None:
        refund = (
            await session.scalars(
                select(Refund)
                .where(Refund.id == refund_id, Refund.provider_refund_id.is_(None))
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).one_or_none()
        if refund is not None:
            refund.provider_refund_id = stripe_id
    return refund


async def _unnamed_external(session: AsyncSession, payment: Payment, amount: int) -> Refund | None:
    """A refund made in Stripe that `charge.refunded` recorded before its own event came."""
    return (
        await session.scalars(
            select(Refund)
            .where(
                Refund.payment_id == payment.id,
                Refund.provider_refund_id.is_(None),
                Refund.requested_by.is_(None),
                Refund.state == RefundState.succeeded,
                Refund.amount_fen == amount,
            )
            .order_by(Refund.created_at)
            .limit(1)
            .with_for_update()
        )
    ).first()


def _ensure_paid(payment: Payment) -> None:
    if payment.state is not PaymentState.succeeded:
        # A refund reported before the payment it returns: not ours to guess. Answered
        # 503 and rolled back, so Stripe delivers it again once the payment is recorded.
        raise Unavailable(
            "This refund's payment is not recorded yet; deliver the event again later.",
            reason="event-out-of-order",
            retry_after=60,
        )


async def _on_refund(session: AsyncSession, event: Event, now: datetime, enqueue: Any) -> str:
    obj = event.object
    refund = await _refund_for(session, obj)
    status = str(obj.get("status"))
    if refund is None:
        payment = await _payment_for_intent(session, obj)
        if payment is None or status != "succeeded":
            return "unknown-refund"
        _ensure_paid(payment)
        amount = int(obj.get("amount") or 0)
        recorded = await _unnamed_external(session, payment, amount)
        if recorded is not None:
            recorded.provider_refund_id = str(obj.get("id"))
            return "external-refund-matched"
        order = await orders.lock_order(session, payment.order_id)
        recorded = await _returned_outside(
            session, order, payment, amount, "refunded in Stripe", str(obj.get("id"))
        )
        return "nothing-left-to-refund" if recorded is None else "external-refund-recorded"
    target = {
        "succeeded": RefundState.succeeded,
        "failed": RefundState.failed,
        "canceled": RefundState.canceled,
    }.get(status)
    if target is None or refund.state is not RefundState.pending:
        return "stale"
    await _settle_refund(session, refund, target)
    return f"refund-{target.value}"


async def _on_charge_refunded(
    session: AsyncSession, event: Event, now: datetime, enqueue: Any
) -> str:
    """A charge was refunded: settle our pending refunds on it; record any made in Stripe."""
    payment = await _payment_for_intent(session, event.object)
    if payment is None:
        return "unknown-intent"
    _ensure_paid(payment)
    refunds = list(
        (
            await session.scalars(
                select(Refund)
                .where(Refund.payment_id == payment.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).all()
    )
    refunded = int(event.object.get("amount_refunded") or 0)
    settled = sum(r.amount_fen for r in refunds if r.state is RefundState.succeeded)
    for refund in refunds:
        if refund.state is RefundState.pending and settled + refund.amount_fen <= refunded:
            await _settle_refund(session, refund, RefundState.succeeded)
            settled += refund.amount_fen
    pending = sum(r.amount_fen for r in refunds if r.state is RefundState.pending)
    if refunded > settled + pending:
        order = await orders.lock_order(session, payment.order_id)
        extra = await _new_refund(
            session,
            order,
            payment,
            amount=refunded - settled - pending,
            reason="refunded in Stripe",
            actor=None,
            allocation=None,
        )
        await _settle_refund(session, extra, RefundState.succeeded)
        return "external-refund-recorded"
    return "refunds-settled"


async def _on_dispute(session: AsyncSession, event: Event, now: datetime, enqueue: Any) -> str:
    payment = await _payment_for_intent(session, event.object)
    if payment is None:
        return "unknown-intent"
    order = await orders.lock_order(session, payment.order_id)
    if event.object_id and await _dispute_closed_before(session, event.object_id):
        return "stale"  # Stripe delivered the dispute's end before its start
    order.settlement_hold = True
    order.updated_at = now
    return "settlement-held"


async def _dispute_closed_before(session: AsyncSession, dispute_id: str) -> bool:
    closed = await session.scalar(
        select(
            exists().where(
                StripeEvent.type == "charge.dispute.closed", StripeEvent.object_id == dispute_id
            )
        )
    )
    return bool(closed)


async def _on_dispute_closed(
    session: AsyncSession, event: Event, now: datetime, enqueue: Any
) -> str:
    """A dispute ended: won (or an inquiry closed), the hold is released; lost, the
    money went back to the buyer and is recorded as a refund, so the ledger reverses it."""
    payment = await _payment_for_intent(session, event.object)
    if payment is None:
        return "unknown-intent"
    order = await orders.lock_order(session, payment.order_id)
    status = str(event.object.get("status"))
    if status in ("won", "warning_closed", "prevented"):
        if not order.settlement_hold:
            return "stale"
        order.settlement_hold = False
        order.updated_at = now
        # Imported here: the payouts module depends on this one.
        from services.ledger.payouts import release_held

        await release_held(session, order.id)
        return "settlement-released"
    if status != "lost":
        return "ignored"
    # Lost: the money is gone, whether or not the dispute's start reached us first.
    order.settlement_hold = True
    order.updated_at = now
    _ensure_paid(payment)
    amount = int(event.object.get("amount") or 0)
    recorded = await _returned_outside(session, order, payment, amount, "dispute lost")
    return "nothing-left-to-refund" if recorded is None else "dispute-lost-refunded"


async def _returned_outside(
    session: AsyncSession,
    order: Order,
    payment: Payment,
    amount: int,
    reason: str,
    provider_refund_id: str | None = None,
) -> Refund | None:
    """Money that went back to the buyer without our asking (a refund made in Stripe's
    dashboard, a dispute lost): a refund settled at once, up to what is left to refund.
    None when nothing is left. The caller holds the order."""
    amount = min(amount, order.paid_fen - await committed_refunds(session, order.id))
    if amount <= 0:
        return None
    refund = await _new_refund(
        session, order, payment, amount=amount, reason=reason, actor=None, allocation=None
    )
    refund.provider_refund_id = provider_refund_id
    await _settle_refund(session, refund, RefundState.succeeded)
    return refund


_HANDLERS = {
    "payment_intent.succeeded": _on_succeeded,
    "payment_intent.payment_failed": _on_failed,
    "payment_intent.canceled": _on_canceled,
    "refund.created": _on_refund,
    "refund.updated": _on_refund,
    "refund.failed": _on_refund,
    "charge.refunded": _on_charge_refunded,
    "charge.dispute.created": _on_dispute,
    "charge.dispute.closed": _on_dispute_closed,
}


# --- refunds -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineRefund:
    line_id: uuid.UUID
    quantity: int


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """Either lines and quantities, or an amount (spread over the lines in proportion)."""

    lines: list[LineRefund] | None = None
    amount_fen: int | None = None
    reason: str = "refund"


async def committed_refunds(session: AsyncSession, order_id: uuid.UUID) -> int:
    """Money already refunded or on its way back: pending refunds count too."""
    total = (
        await session.execute(
            select(func.coalesce(func.sum(Refund.amount_fen), 0)).where(
                Refund.order_id == order_id,
                Refund.state.in_([RefundState.pending, RefundState.succeeded]),
            )
        )
    ).scalar_one()
    return int(total)


async def _new_refund(
    session: AsyncSession,
    order: Order,
    payment: Payment,
    *,
    amount: int,
    reason: str,
    actor: User | None,
    allocation: list[dict[str, Any]] | None,
) -> Refund:
    """A pending refund whose amount falls on the order's lines (by the given allocation,
    or in proportion to what each line can still give back)."""
    lines = await orders.order_lines(session, order.id)
    if allocation is None or not allocation:
        room = [line.gross_fen - line.refunded_fen for line in lines]
        amount = min(amount, sum(room))
        parts = money.allocate(amount, room) if amount else [0] * len(lines)
        allocation = [
            {"line_id": str(line.id), "quantity": 0, "amount_fen": part}
            for line, part in zip(lines, parts, strict=True)
            if part
        ]
    by_id = {str(line.id): line for line in lines}
    for part in allocation:
        line = by_id[part["line_id"]]
        line.refunded_fen += int(part["amount_fen"])
        line.refunded_quantity += int(part["quantity"])
    refund = Refund(
        id=uuid.uuid4(),
        order_id=order.id,
        payment_id=payment.id,
        amount_fen=amount,
        currency=order.currency,
        state=RefundState.pending,
        reason=reason,
        allocation=allocation,
        requested_by=actor.id if actor else None,
    )
    session.add(refund)
    await session.flush()
    # A refund after recognition takes its share back from each party, that day.
    await ledger.resync_order(session, order.id, at=utcnow(), refund_id=refund.id)
    return refund


async def _settle_refund(session: AsyncSession, refund: Refund, state: RefundState) -> None:
    """A refund reached its final state: money counts as returned, or the lines get it back."""
    refund.state = state
    order = await orders.lock_order(session, refund.order_id)
    if state is RefundState.succeeded:
        order.refunded_fen += refund.amount_fen
        order.payment_status = (
            PaymentStatus.refunded
            if order.refunded_fen >= order.paid_fen
            else PaymentStatus.partially_refunded
        )
        await session.flush()
        return
    lines = {str(line.id): line for line in await orders.order_lines(session, order.id)}
    for part in refund.allocation:
        line = lines[part["line_id"]]
        line.refunded_fen -= int(part["amount_fen"])
        line.refunded_quantity -= int(part["quantity"])
    await session.flush()
    # The refund did not happen: what it took back from the ledger is given back.
    await ledger.resync_order(session, order.id, at=utcnow(), refund_id=refund.id)


def _ensure_may_refund(actor: User, order: Order, lines: list[OrderLine]) -> list[OrderLine]:
    """Admins refund anything; a manager only the lines of their own cooperative."""
    if actor.role is Role.admin:
        return lines
    access.ensure_role(actor, Role.manager)
    own = [line for line in lines if line.cooperative_id == actor.cooperative_id]
    if not own:
        raise NotFound("No such order.")
    return own


async def request_refund(
    session: AsyncSession,
    actor: User,
    order_id: uuid.UUID,
    spec: RefundRequest,
    *,
    enqueue: Any,
) -> Refund:
    """Write a pending refund and its job; never more than was paid, across all refunds."""
    order = await orders.lock_order(session, order_id)
    lines = await orders.order_lines(session, order.id)
    mine = _ensure_may_refund(actor, order, lines)
    return await refund_lines(session, order, mine, spec, requested_by=actor, enqueue=enqueue)


async def refund_lines(
    session: AsyncSession,
    order: Order,
    mine: list[OrderLine],
    spec: RefundRequest,
    *,
    requested_by: User | None,
    enqueue: Any,
) -> Refund:
    """Refund part of an order, limited to the lines given (the caller's share of it)."""
    payment = await payment_of(session, order.id, lock=True)
    if order.paid_fen == 0:
        raise Conflict("Nothing has been paid on this order yet.", reason="not-paid")
    if (spec.lines is None) == (spec.amount_fen is None):
        raise Invalid("Give either lines or an amount.", field="lines")
    allocation: list[dict[str, Any]] = []
    if spec.lines is not None:
        by_id = {line.id: line for line in mine}
        for index, wanted in enumerate(spec.lines):
            line = by_id.get(wanted.line_id)
            if line is None:
                raise Invalid(
                    "No such line in your part of this order.", field=f"lines.{index}.line_id"
                )
            if wanted.quantity > line.quantity - line.refunded_quantity:
                raise Conflict(
                    "More than is left to refund on this line.",
                    field=f"lines.{index}.quantity",
                    reason="refund-exceeds-line",
                )
            # The line's money per unit, exactly: the last unit carries the rounding.
            left = line.quantity - line.refunded_quantity
            line_room = line.gross_fen - line.refunded_fen
            part = line_room if wanted.quantity == left else line.unit_price_fen * wanted.quantity
            allocation.append(
                {
                    "line_id": str(line.id),
                    "quantity": wanted.quantity,
                    "amount_fen": min(part, line_room),
                }
            )
        amount = sum(int(a["amount_fen"]) for a in allocation)
    else:
        assert spec.amount_fen is not None
        amount = spec.amount_fen
        room = [line.gross_fen - line.refunded_fen for line in mine]
        if amount > sum(room):
            raise Conflict(
                "More than is left to refund on these lines.",
                field="amount_fen",
                reason="refund-exceeds-paid",
            )
        parts = money.allocate(amount, room)
        allocation = [
            {"line_id": str(line.id), "quantity": 0, "amount_fen": part}
            for line, part in zip(mine, parts, strict=True)
            if part
        ]
    if amount <= 0:
        raise Invalid("A refund returns a positive amount.", field="amount_fen")
    if amount > order.paid_fen - await committed_refunds(session, order.id):
        raise Conflict(
            "Refunds would exceed what was paid.", field="amount_fen", reason="refund-exceeds-paid"
        )
    refund = await _new_refund(
        session,
        order,
        payment,
        amount=amount,
        reason=spec.reason,
        actor=requested_by,
        allocation=allocation,
    )
    if payment.provider is Provider.cash:
        # Cash goes back by hand at the site or the door: recorded as returned now.
        await _settle_refund(session, refund, RefundState.succeeded)
    else:
        await enqueue(
            session, REFUND_JOB, {"refund_id": str(refund.id)}, dedupe_key=f"refund:{refund.id}"
        )
    return refund


async def execute_refund(
    session: AsyncSession, gateway: StripeGateway | None, refund_id: uuid.UUID
) -> Refund:
    """Send a pending refund to Stripe (idempotent: key `refund:{id}`) and record the answer.

    The order is locked before the refund, as everywhere (see `_lock_order_of`); both
    locks are held through the Stripe call (bounded by the gateway's timeout), so that
    one refund is never sent twice at once.
    """
    order_id = await session.scalar(select(Refund.order_id).where(Refund.id == refund_id))
    if order_id is None:
        raise NotFound("No such refund.")
    await orders.lock_order(session, order_id)
    refund = (
        await session.scalars(
            select(Refund)
            .where(Refund.id == refund_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if refund is None:
        raise NotFound("No such refund.")
    if refund.state is not RefundState.pending or refund.provider_refund_id is not None:
        return refund
    if gateway is None:
        raise RuntimeError("Stripe is not configured; the refund waits until it is.")
    payment = await session.get(Payment, refund.payment_id)
    assert payment is not None and payment.provider_payment_id is not None
    try:
        result = await gateway.create_refund(
            payment_intent=payment.provider_payment_id,
            amount=refund.amount_fen,
            idempotency_key=f"refund:{refund.id}",
            metadata={"order_id": str(refund.order_id), "refund_id": str(refund.id)},
        )
    except ProviderRejected as exc:
        # Stripe said no for good (not "try later"): the refund failed and the lines
        # get their refundable room back. ProviderError propagates: the job retries.
        logger.warning(
            "refund rejected by Stripe", extra={"refund_id": str(refund.id), "error": str(exc)}
        )
        await _settle_refund(session, refund, RefundState.failed)
        return refund
    refund.provider_refund_id = result.id
    if result.status == "succeeded":
        await _settle_refund(session, refund, RefundState.succeeded)
    elif result.status in ("failed", "canceled"):
        await _settle_refund(session, refund, RefundState(result.status))
    return refund


async def run_refund_now(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway | None,
    refund_id: uuid.UUID,
) -> None:
    """Best effort at once, so the answer usually shows the outcome; the job retries."""
    if gateway is None:
        return
    try:
        async with sessionmaker() as session, session.begin():
            await execute_refund(session, gateway, refund_id)
    except ProviderError as exc:
        logger.warning(
            "refund deferred to the job", extra={"refund_id": str(refund_id), "error": repr(exc)}
        )


# --- cash on delivery ------------------------------------------------------------


async def record_cash_collected(
    session: AsyncSession, order_id: uuid.UUID, *, amount: int, now: datetime
) -> Order:
    """The courier or the village site took the cash: the cash payment succeeded.

    Called by the logistics events (cash collected); the whole amount is due.
    """
    order = await orders.lock_order(session, order_id)
    if order.payment_method is not PaymentMethod.cod:
        raise Conflict("This order is paid by card.", reason="not-cash-on-delivery")
    payment = await payment_of(session, order.id, lock=True)
    if payment.state is PaymentState.succeeded:
        return order  # a repeated report of the same collection
    if order.status is OrderStatus.cancelled:
        raise Conflict("This order was cancelled.", reason="order-not-payable")
    if amount != order.total_fen:
        raise Invalid(
            f"Cash on delivery collects the whole {order.total_fen} fen.",
            field="amount_fen",
            expected=order.total_fen,
        )
    payment.state = PaymentState.succeeded
    payment.succeeded_at = now
    await orders.record_sale(session, order, amount=amount, now=now)
    return order


async def record_cash_refused(
    session: AsyncSession,
    order_id: uuid.UUID,
    *,
    reason: str,
    actor_id: uuid.UUID | None,
    now: datetime,
) -> Order:
    """The buyer refused the parcel: no money, the order is cancelled, stock returns."""
    order = await orders.lock_order(session, order_id)
    if order.payment_method is not PaymentMethod.cod:
        raise Conflict("This order is paid by card.", reason="not-cash-on-delivery")
    payment = await payment_of(session, order.id, lock=True)
    if payment.state is PaymentState.succeeded:
        raise Conflict("The cash was collected already.", reason="cash-already-collected")
    payment.state = PaymentState.failed
    payment.last_failure = reason
    await orders.cancel(session, order, reason=reason, actor_id=actor_id, now=now)
    return order
