"""Use cases that span a call to Stripe, and so own their transactions.

Everything else in services works inside the caller's single transaction. A
checkout paid by Stripe cannot: holding stock locks while waiting for Stripe
would serialise every buyer of a popular product behind the network. So the
order is committed first (stock reserved, key claimed and naming the order),
Stripe is asked for the intent outside any transaction, and the intent and the
answer are recorded by one statement of their own (`payments.bind_intent`). A
failure in between leaves a pending order that a retry with the same key resumes.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.db import autocommit_driver
from services.errors import Conflict, Invalid, NotFound, Unavailable
from services.idempotency import service as idempotency
from services.orders import service as orders
from services.orders.checkout import Cart, FeePolicy, KeyWrite, prepare_order, write_order
from services.orders.models import Order, OrderStatus, PaymentMethod, PaymentStatus
from services.payments import service as payments
from services.payments.models import PaymentState, Refund
from services.payments.stripe import ProviderError, ProviderRejected, StripeGateway
from services.users.models import Role, User

# The answer's JSON text: kept as the key's answer and sent as it is.
Render = Callable[[orders.OrderView, str | None], str]
Enqueue = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: str  # JSON
    replayed: bool


async def checkout(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway | None,
    buyer: User,
    cart: Cart,
    *,
    key: str,
    digest: str,
    fees: FeePolicy,
    reservation: timedelta,
    now: datetime,
    render: Render,
) -> Answer:
    if cart.payment_method is PaymentMethod.stripe and gateway is None:
        raise Invalid(
            "Card and wallet payments are not configured here; choose cash on delivery.",
            field="payment_method",
            reason="stripe-not-configured",
        )
    placed: orders.OrderView | None = None
    async with sessionmaker() as session, session.begin():
        claim = await idempotency.claim(
            session, owner_id=buyer.id, key=key, scope="checkout", digest=digest, now=now
        )
        if claim.completed:
            assert claim.response_status is not None
            return Answer(claim.response_status, claim.answer_text(), replayed=True)
        if claim.new:
            prepared = await prepare_order(
                session, buyer, cart, fees=fees, now=now, reservation=reservation
            )
            placed = prepared.view
            order = placed.order
            if order.payment_method is PaymentMethod.cod:
                # The answer is kept with the order, in the statement that writes it.
                body = render(placed, None)
                answered = KeyWrite(buyer.id, key, status=201, body=body, now=now)
                await write_order(session, prepared, key=answered)
                return Answer(201, body, replayed=False)
            # Stripe is asked outside this transaction: a retry finds the order by the key,
            # which the statement writing the order names it in.
            await write_order(session, prepared, key=KeyWrite(buyer.id, key))
            order_id = order.id
        else:
            # The first request with this key made the order but never heard from
            # Stripe (or is still talking to it): carry on from there.
            assert claim.resource_id is not None
            order_id = claim.resource_id
    assert gateway is not None
    return await _attach_intent(
        sessionmaker, gateway, buyer, order_id, key=key, now=now, render=render, placed=placed
    )


async def _attach_intent(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    buyer: User,
    order_id: uuid.UUID,
    *,
    key: str,
    now: datetime,
    render: Render,
    placed: orders.OrderView | None,
) -> Answer:
    """Get the order's PaymentIntent from Stripe and record it; `placed` is the order as
    this request placed it (None when carrying on from an earlier request)."""
    if placed is not None:
        order = placed.order
    else:
        async with sessionmaker() as session:
            found = await session.get(Order, order_id)
            assert found is not None
            order = found
    try:
        intent = await payments.request_intent(gateway, order)
    except ProviderError as exc:
        raise Unavailable(
            "The payment provider did not answer. The order is kept; retry with the same "
            "Idempotency-Key.",
            reason="payment-provider-unavailable",
            order_id=str(order_id),
        ) from exc
    except ProviderRejected as exc:
        raise Unavailable(
            f"The payment provider refused the payment: {exc}. Retry later with the same "
            "Idempotency-Key.",
            reason="payment-provider-rejected",
            order_id=str(order_id),
            retry_after=30,
        ) from exc
    if placed is not None:
        # Until it is paid or cancelled, an order (still awaiting payment, under the
        # binding's lock), its fulfilments and lines stay as they were placed: no need to
        # read them again. The answer is rendered first, to be kept with the binding.
        if placed.payment is not None:
            placed.payment.provider_payment_id = intent.id
        body = render(placed, intent.client_secret)
        async with autocommit_driver(sessionmaker) as driver:
            bound = await payments.bind_intent(
                driver,
                order_id,
                intent.id,
                owner_id=buyer.id,
                key=key,
                status=201,
                body=body,
                now=now,
            )
        if bound.bound:
            return Answer(201, body, replayed=False)
        if bound.status is not None and bound.status is not OrderStatus.awaiting_payment:
            raise _not_payable(order_id, bound.status)
    # A retry carrying on, or a payment that will not bind, goes through the entities.
    async with sessionmaker() as session, session.begin():
        order = await orders.lock_order(session, order_id)
        await payments.record_intent(session, order_id, intent)
        if order.status is not OrderStatus.awaiting_payment:
            raise _not_payable(order_id, order.status)
        body = render(await orders.view(session, order), intent.client_secret)
        await idempotency.complete(
            session, owner_id=buyer.id, key=key, status=201, body=body, now=now
        )
    return Answer(201, body, replayed=False)


def _not_payable(order_id: uuid.UUID, status: OrderStatus) -> Conflict:
    return Conflict(
        f"This order is {status.value} already.",
        reason="order-not-payable",
        order_id=str(order_id),
    )


async def cancel_by_buyer(
    session: AsyncSession,
    actor: User,
    order_id: uuid.UUID,
    *,
    now: datetime,
    enqueue: Enqueue,
    reason: str = "cancelled by the buyer",
) -> tuple[Order, Refund | None]:
    """Cancel before shipment; a paid order gets its money back, an open intent is cancelled."""
    order = await orders.lock_order(session, order_id)
    if actor.role is not Role.admin and order.buyer_id != actor.id:
        raise NotFound("No such order.")
    if order.status not in (OrderStatus.awaiting_payment, OrderStatus.confirmed):
        # The state machine lets a shipped order be cancelled only when its cash-on-
        # delivery parcel is refused at the door; a buyer cannot cancel it from here.
        raise Conflict(
            f"An order that is {order.status.value} can no longer be cancelled.",
            field="status",
            reason="illegal-transition",
            from_status=order.status.value,
            to_status=OrderStatus.cancelled.value,
        )
    payment = await payments.payment_of(session, order.id, lock=True)
    paid = order.payment_status is not PaymentStatus.unpaid
    await orders.cancel(session, order, reason=reason, actor_id=actor.id, now=now)
    refund = None
    if payment.provider_payment_id and payment.state is PaymentState.pending:
        payment.state = PaymentState.canceled
        await enqueue(
            session,
            payments.CANCEL_INTENT_JOB,
            {"intent_id": payment.provider_payment_id},
            dedupe_key=f"cancel:{payment.provider_payment_id}",
        )
    if paid:
        left = order.paid_fen - await payments.committed_refunds(session, order.id)
        if left > 0:
            lines = await orders.order_lines(session, order.id)
            refund = await payments.refund_lines(
                session,
                order,
                lines,
                payments.RefundRequest(amount_fen=left, reason=reason),
                requested_by=actor,
                enqueue=enqueue,
            )
    return order, refund


async def expire_due(
    session: AsyncSession, *, now: datetime, enqueue: Enqueue, limit: int = 200
) -> int:
    """Cancel unpaid Stripe orders whose reservation ran out, returning their stock.

    SKIP LOCKED lets several workers sweep at once without waiting on each other;
    the state machine makes a second expiry of one order impossible.
    """
    due = list(
        (
            await session.scalars(
                select(Order)
                .where(Order.status == OrderStatus.awaiting_payment, Order.reserved_until <= now)
                .order_by(Order.reserved_until)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
        ).all()
    )
    for order in due:
        payment = await payments.payment_of(session, order.id, lock=True)
        await orders.cancel(session, order, reason="reservation expired", actor_id=None, now=now)
        if payment.state is PaymentState.pending:
            payment.state = PaymentState.canceled
            if payment.provider_payment_id:
                await enqueue(
                    session,
                    payments.CANCEL_INTENT_JOB,
                    {"intent_id": payment.provider_payment_id},
                    dedupe_key=f"cancel:{payment.provider_payment_id}",
                )
    return len(due)


async def refund(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway | None,
    actor: User,
    order_id: uuid.UUID,
    spec: payments.RefundRequest,
    *,
    key: str,
    digest: str,
    now: datetime,
    enqueue: Enqueue,
    render: Callable[[Refund], str],
) -> Answer:
    """Record a refund (with its job), try Stripe at once, answer; a retry resumes or replays."""
    async with sessionmaker() as session, session.begin():
        claim = await idempotency.claim(
            session, owner_id=actor.id, key=key, scope=f"refund:{order_id}", digest=digest, now=now
        )
        if claim.completed:
            assert claim.response_status is not None
            return Answer(claim.response_status, claim.answer_text(), replayed=True)
        if claim.new:
            created = await payments.request_refund(session, actor, order_id, spec, enqueue=enqueue)
            await idempotency.attach(session, owner_id=actor.id, key=key, resource_id=created.id)
            refund_id = created.id
        else:
            assert claim.resource_id is not None
            refund_id = claim.resource_id
    await payments.run_refund_now(sessionmaker, gateway, refund_id)
    async with sessionmaker() as session, session.begin():
        final = await session.get(Refund, refund_id, populate_existing=True)
        assert final is not None
        body = render(final)
        await idempotency.complete(
            session, owner_id=actor.id, key=key, status=201, body=body, now=now
        )
    return Answer(201, body, replayed=False)
