"""Reading orders within scope, and the moves payments and buyers make on them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.catalog import service as catalog
from services.errors import Conflict, NotFound
from services.jobs.service import enqueue
from services.orders import states
from services.orders.models import (
    Fulfilment,
    FulfilmentStatus,
    Order,
    OrderLine,
    OrderStatus,
    PaymentStatus,
)
from services.pagination import Page, keyset_page
from services.payments.models import Payment
from services.users import access
from services.users.models import Role, User


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order as one caller may see it: managers see only their own fulfilments."""

    order: Order
    fulfilments: list[Fulfilment]
    lines: list[OrderLine]
    payment: Payment | None


async def lock_order(session: AsyncSession, order_id: uuid.UUID) -> Order:
    order = (
        await session.scalars(
            select(Order)
            .where(Order.id == order_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if order is None:
        raise NotFound("No such order.")
    return order


async def order_lines(session: AsyncSession, order_id: uuid.UUID) -> list[OrderLine]:
    return list(
        (
            await session.scalars(
                select(OrderLine)
                .where(OrderLine.order_id == order_id)
                .order_by(OrderLine.position)
                .execution_options(populate_existing=True)
            )
        ).all()
    )


async def view(
    session: AsyncSession, order: Order, *, cooperative_id: uuid.UUID | None = None
) -> OrderView:
    # Columns the database sets on update (updated_at) are reloaded, not lazily fetched.
    await session.refresh(order)
    fulfilments = list(
        (
            await session.scalars(
                select(Fulfilment)
                .where(Fulfilment.order_id == order.id)
                .order_by(Fulfilment.created_at, Fulfilment.id)
                .execution_options(populate_existing=True)
            )
        ).all()
    )
    lines = await order_lines(session, order.id)
    payment = (
        await session.scalars(
            select(Payment)
            .where(Payment.order_id == order.id)
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if cooperative_id is not None:
        fulfilments = [f for f in fulfilments if f.cooperative_id == cooperative_id]
        lines = [line for line in lines if line.cooperative_id == cooperative_id]
        payment = None
    return OrderView(order, fulfilments, lines, payment)


async def get_for(session: AsyncSession, actor: User, order_id: uuid.UUID) -> OrderView:
    """Buyers read their own orders, managers orders with one of their fulfilments, admins all.

    Anything else is a 404, so that order ids reveal nothing.
    """
    order = await session.get(Order, order_id, populate_existing=True)
    if order is None:
        raise NotFound("No such order.")
    if actor.role is Role.admin:
        return await view(session, order)
    if actor.role is Role.buyer and order.buyer_id == actor.id:
        return await view(session, order)
    if actor.role is Role.manager and actor.cooperative_id is not None:
        shown = await view(session, order, cooperative_id=actor.cooperative_id)
        if shown.fulfilments:
            return shown
    raise NotFound("No such order.")


async def list_for(
    session: AsyncSession,
    actor: User,
    *,
    status: OrderStatus | None,
    limit: int,
    cursor: str | None,
) -> Page[Order]:
    stmt = select(Order)
    if actor.role is Role.manager and actor.cooperative_id is not None:
        stmt = stmt.where(
            exists().where(
                Fulfilment.order_id == Order.id, Fulfilment.cooperative_id == actor.cooperative_id
            )
        )
    elif actor.role is not Role.admin:
        stmt = stmt.where(Order.buyer_id == actor.id)
    if status is not None:
        stmt = stmt.where(Order.status == status)
    return await keyset_page(
        session,
        stmt,
        order=[Order.created_at, Order.id],
        kind="orders",
        cursor=cursor,
        limit=limit,
        descending=True,
    )


async def fulfilment_queue(
    session: AsyncSession,
    actor: User,
    cooperative_id: uuid.UUID,
    *,
    status: FulfilmentStatus | None,
    limit: int,
    cursor: str | None,
) -> Page[Fulfilment]:
    access.ensure_role(actor, Role.admin, Role.manager)
    access.ensure_cooperative(actor, cooperative_id)
    stmt = select(Fulfilment).where(Fulfilment.cooperative_id == cooperative_id)
    if status is not None:
        stmt = stmt.where(Fulfilment.status == status)
    return await keyset_page(
        session,
        stmt,
        order=[Fulfilment.created_at, Fulfilment.id],
        kind="fulfilments",
        cursor=cursor,
        limit=limit,
        descending=True,
    )


def _items(lines: list[OrderLine]) -> list[tuple[uuid.UUID, int]]:
    return [(line.product_id, line.quantity) for line in lines]


_NOT_SHIPPED = (FulfilmentStatus.awaiting_payment, FulfilmentStatus.ready)


async def _set_fulfilments(
    session: AsyncSession,
    order_id: uuid.UUID,
    status: FulfilmentStatus,
    now: datetime,
    *,
    from_statuses: tuple[FulfilmentStatus, ...] = _NOT_SHIPPED,
) -> None:
    await session.execute(
        update(Fulfilment)
        .where(Fulfilment.order_id == order_id, Fulfilment.status.in_(from_statuses))
        .values(status=status, updated_at=now)
    )


async def record_sale(session: AsyncSession, order: Order, *, amount: int, now: datetime) -> None:
    """Money received: the order is paid, reserved stock counts as sold, and the share
    snapshot is retaken (the SQL function `orders_record_sale`, migrations 0012 and 0021)."""
    await session.flush()
    await session.execute(_RECORD_SALE, {"order": order.id, "amount": amount, "now": now})
    await session.refresh(order)


async def confirm_paid(session: AsyncSession, order: Order, *, amount: int, now: datetime) -> None:
    """A Stripe payment succeeded: the order proceeds to its cooperatives.

    The order is confirmed (with its history row), its fulfilments are ready, and the
    sale is recorded, by the SQL function `orders_confirm_paid` (migrations 0012 and 0021);
    a Stripe event's one-statement path calls the part after its check of the status,
    `orders_confirmed_by_payment`, itself. The share snapshot is taken
    again at the moment of payment: a sale keeps the shares in force when it was paid
    (DESIGN), and they may have changed since checkout.
    """
    states.ensure_can_move(order.status, OrderStatus.confirmed)
    await session.flush()
    await session.execute(_CONFIRM_PAID, {"order": order.id, "amount": amount, "now": now})
    await session.refresh(order)


_RECORD_SALE = text("SELECT orders_record_sale(:order, :amount, :now)")
_CONFIRM_PAID = text("SELECT orders_confirm_paid(:order, :amount, :now)")


async def cancel(
    session: AsyncSession,
    order: Order,
    *,
    reason: str,
    actor_id: uuid.UUID | None,
    now: datetime,
) -> None:
    """Cancel an order not yet shipped and give its goods back to stock, exactly once.

    The caller holds the order's row lock; the state machine refuses a second
    cancellation, so stock can never be returned twice.
    """
    sold = order.payment_status is not PaymentStatus.unpaid
    states.move(session, order, OrderStatus.cancelled, reason=reason, actor_id=actor_id, now=now)
    order.cancelled_at = now
    order.cancel_reason = reason
    order.reserved_until = None
    # A shipped fulfilment is cancelled only with its refused cash-on-delivery parcel.
    await _set_fulfilments(
        session,
        order.id,
        FulfilmentStatus.cancelled,
        now,
        from_statuses=(*_NOT_SHIPPED, FulfilmentStatus.shipped),
    )
    items = _items(await order_lines(session, order.id))
    if sold:
        await catalog.unsell(session, items)
    else:
        await catalog.release(session, items)
    # Written at once: a later query in this transaction (another sweep, a report)
    # must see the order cancelled, or it could return the stock a second time.
    await session.flush()


# --- shipping and delivery -----------------------------------------------------------

# The outbox record that makes income attribution follow a delivery (or, for cash on
# delivery, the collection of the cash): one job per fulfilment, handled by the ledger.
RECOGNITION_JOB = "attribution.recognise_fulfilment"


async def fulfilment_of(
    session: AsyncSession, order: Order, fulfilment_id: uuid.UUID
) -> Fulfilment:
    """A fulfilment of a locked order; the order's lock covers its fulfilments."""
    fulfilment = await session.get(Fulfilment, fulfilment_id, populate_existing=True)
    if fulfilment is None or fulfilment.order_id != order.id:
        raise NotFound("No such fulfilment.")
    return fulfilment


async def ship_fulfilment(
    session: AsyncSession,
    order: Order,
    fulfilment: Fulfilment,
    *,
    actor_id: uuid.UUID | None,
    now: datetime,
) -> None:
    """A parcel of this fulfilment left the cooperative; the first one ships the order."""
    if fulfilment.status is FulfilmentStatus.shipped:
        return  # a further parcel of a fulfilment already under way
    if fulfilment.status is not FulfilmentStatus.ready:
        raise Conflict(
            f"A fulfilment that is {fulfilment.status.value} cannot be shipped.",
            field="status",
            reason="illegal-transition",
            from_status=fulfilment.status.value,
            to_status=FulfilmentStatus.shipped.value,
        )
    fulfilment.status = FulfilmentStatus.shipped
    fulfilment.updated_at = now
    if order.status is OrderStatus.confirmed:
        states.move(
            session, order, OrderStatus.shipped, reason="parcel shipped", actor_id=actor_id, now=now
        )


async def request_recognition(session: AsyncSession, fulfilment_id: uuid.UUID) -> None:
    await enqueue(
        session,
        RECOGNITION_JOB,
        {"fulfilment_id": str(fulfilment_id)},
        dedupe_key=str(fulfilment_id),
    )


async def delivered_fulfilments(session: AsyncSession, order_id: uuid.UUID) -> list[uuid.UUID]:
    return list(
        (
            await session.scalars(
                select(Fulfilment.id).where(
                    Fulfilment.order_id == order_id,
                    Fulfilment.status == FulfilmentStatus.delivered,
                )
            )
        ).all()
    )
