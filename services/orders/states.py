"""The order state machine, as data, checked in one function."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.errors import Conflict
from services.orders.models import Order, OrderEvent, OrderStatus

S = OrderStatus

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.awaiting_payment: frozenset({S.confirmed, S.cancelled}),
    S.confirmed: frozenset({S.shipped, S.delivered, S.cancelled}),
    # shipped -> cancelled only for a cash-on-delivery parcel the buyer refused.
    S.shipped: frozenset({S.delivered, S.cancelled}),
    S.delivered: frozenset(),
    S.cancelled: frozenset(),
}


def can_move(current: OrderStatus, to: OrderStatus) -> bool:
    return to in TRANSITIONS[current]


def ensure_can_move(current: OrderStatus, to: OrderStatus) -> None:
    """An illegal move is a 409 naming both states."""
    if not can_move(current, to):
        raise Conflict(
            f"An order cannot move from {current.value} to {to.value}.",
            field="status",
            reason="illegal-transition",
            from_status=current.value,
            to_status=to.value,
        )


def move(
    session: AsyncSession,
    order: Order,
    to: OrderStatus,
    *,
    reason: str,
    actor_id: uuid.UUID | None,
    now: datetime,
) -> None:
    """Change an order's status and append the change to its history.

    The caller holds the order's row lock. An illegal move is a 409 naming both
    states, so that a stale or duplicate request can never move an order back.
    """
    current = order.status
    ensure_can_move(current, to)
    order.status = to
    order.updated_at = now
    session.add(
        OrderEvent(
            order_id=order.id,
            from_status=current.value,
            to_status=to.value,
            reason=reason,
            actor_id=actor_id,
            at=now,
        )
    )
