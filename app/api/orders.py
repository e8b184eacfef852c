"""Checkout, orders, cancellation, refunds and the managers' fulfilment queue."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Query, Request, status
from fastapi.responses import Response

from app.deps import (
    CurrentUser,
    Cursor,
    Limit,
    SessionDep,
    SettingsDep,
    now,
    require,
    require_detached,
)
from app.schemas.common import PageOut
from app.schemas.orders import (
    CheckoutOut,
    CheckoutRequest,
    DeliveryOut,
    FulfilmentOut,
    FulfilmentQueueItem,
    HomeDelivery,
    LineOut,
    OrderOut,
    OrderSummary,
    RefundIn,
    RefundOut,
)
from app.schemas.problem import problem_responses
from services.idempotency.service import request_hash
from services.jobs.service import enqueue
from services.orders import flows
from services.orders import service as orders
from services.orders.checkout import Cart, CartLine, Delivery, FeePolicy
from services.orders.models import DeliveryType, FulfilmentStatus, OrderStatus, PaymentMethod
from services.payments import service as payments
from services.payments.models import Refund
from services.users.models import Role, User

router = APIRouter(prefix="/v1", tags=["orders"])
Buyer = Annotated[User, Depends(require_detached(Role.buyer))]
Refunder = Annotated[User, Depends(require_detached(Role.admin, Role.manager))]
Canceller = Annotated[User, Depends(require(Role.buyer, Role.admin))]
ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422, 503)
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="A retry with the same key returns the first answer and creates nothing.",
    ),
]


def order_out(shown: orders.OrderView) -> OrderOut:
    o = shown.order
    lines_by_fulfilment: dict[uuid.UUID, list[LineOut]] = {}
    for line in shown.lines:
        lines_by_fulfilment.setdefault(line.fulfilment_id, []).append(
            LineOut(
                id=line.id,
                product_id=line.product_id,
                title=line.title,
                unit=line.unit,
                unit_price_fen=line.unit_price_fen,
                quantity=line.quantity,
                gross_fen=line.gross_fen,
                refunded_quantity=line.refunded_quantity,
                refunded_fen=line.refunded_fen,
            )
        )
    return OrderOut(
        id=o.id,
        status=o.status.value,
        payment_method=o.payment_method.value,
        payment_status=o.payment_status.value,
        currency=o.currency,
        items_fen=o.items_fen,
        total_fen=o.total_fen,
        paid_fen=o.paid_fen,
        refunded_fen=o.refunded_fen,
        delivery=DeliveryOut(
            type=o.delivery_type.value, address=o.delivery_address, site_id=o.pickup_site_id
        ),
        reserved_until=o.reserved_until,
        settlement_hold=o.settlement_hold,
        fulfilments=[
            FulfilmentOut(
                id=f.id,
                cooperative_id=f.cooperative_id,
                status=f.status.value,
                items_fen=f.items_fen,
                lines=lines_by_fulfilment.get(f.id, []),
            )
            for f in shown.fulfilments
        ],
        created_at=o.created_at,
        updated_at=o.updated_at,
    )


def _render_checkout(shown: orders.OrderView, client_secret: str | None) -> str:
    # The order's fields as validated by OrderOut, with the secret: nothing to check again.
    body = CheckoutOut.model_construct(**dict(order_out(shown)), client_secret=client_secret)
    return body.model_dump_json()


def _answered(answer: flows.Answer) -> Response:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return Response(
        answer.body, status_code=answer.status, headers=headers, media_type="application/json"
    )


def _cart(body: CheckoutRequest) -> Cart:
    delivery = body.delivery
    if isinstance(delivery, HomeDelivery):
        target = Delivery(DeliveryType.home, address=delivery.address.model_dump(mode="json"))
    else:
        target = Delivery(DeliveryType.pickup, site_id=delivery.site_id)
    return Cart(
        lines=[CartLine(line.product_id, line.quantity) for line in body.lines],
        delivery=target,
        payment_method=PaymentMethod(body.payment_method),
    )


@router.post(
    "/checkout", status_code=status.HTTP_201_CREATED, response_model=CheckoutOut, responses=ERRORS
)
async def checkout(
    request: Request,
    body: CheckoutRequest,
    buyer: Buyer,
    settings: SettingsDep,
    key: IdempotencyKey,
) -> Response:
    answer = await flows.checkout(
        request.app.state.sessionmaker,
        request.app.state.stripe,
        buyer,
        _cart(body),
        key=key,
        digest=request_hash(body.model_dump(mode="json")),
        fees=FeePolicy(settings.platform_fee_bp, settings.platform_fee_bp_certified),
        reservation=timedelta(minutes=settings.reservation_minutes),
        now=now(),
        render=_render_checkout,
    )
    return _answered(answer)


@router.get("/orders", response_model=PageOut[OrderSummary], responses=ERRORS)
async def list_orders(
    session: SessionDep,
    actor: CurrentUser,
    limit: Limit = 20,
    cursor: Cursor = None,
    status: Annotated[OrderStatus | None, Query()] = None,
) -> PageOut[OrderSummary]:
    page = await orders.list_for(session, actor, status=status, limit=limit, cursor=cursor)
    return PageOut(
        items=[
            OrderSummary(
                id=o.id,
                status=o.status.value,
                payment_method=o.payment_method.value,
                payment_status=o.payment_status.value,
                currency=o.currency,
                total_fen=o.total_fen,
                created_at=o.created_at,
            )
            for o in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.get("/orders/{order_id}", response_model=OrderOut, responses=ERRORS)
async def get_order(session: SessionDep, actor: CurrentUser, order_id: uuid.UUID) -> OrderOut:
    return order_out(await orders.get_for(session, actor, order_id))


@router.post("/orders/{order_id}/cancel", response_model=OrderOut, responses=ERRORS)
async def cancel_order(
    request: Request,
    session: SessionDep,
    actor: Canceller,
    order_id: uuid.UUID,
    background: BackgroundTasks,
) -> OrderOut:
    order, refund = await flows.cancel_by_buyer(
        session, actor, order_id, now=now(), enqueue=enqueue
    )
    if refund is not None:
        # After the commit, try Stripe at once; the queued job covers any failure.
        background.add_task(
            payments.run_refund_now,
            request.app.state.sessionmaker,
            request.app.state.stripe,
            refund.id,
        )
    return order_out(await orders.view(session, order))


def refund_out(refund: Refund) -> RefundOut:
    return RefundOut(
        id=refund.id,
        order_id=refund.order_id,
        amount_fen=refund.amount_fen,
        currency=refund.currency,
        state=refund.state.value,
        reason=refund.reason,
        created_at=refund.created_at,
    )


@router.post(
    "/orders/{order_id}/refunds",
    status_code=status.HTTP_201_CREATED,
    response_model=RefundOut,
    responses=ERRORS,
)
async def refund_order(
    request: Request,
    body: RefundIn,
    actor: Refunder,
    order_id: uuid.UUID,
    key: IdempotencyKey,
) -> Response:
    spec = payments.RefundRequest(
        lines=[payments.LineRefund(line.line_id, line.quantity) for line in body.lines]
        if body.lines is not None
        else None,
        amount_fen=body.amount_fen,
        reason=body.reason,
    )
    answer = await flows.refund(
        request.app.state.sessionmaker,
        request.app.state.stripe,
        actor,
        order_id,
        spec,
        key=key,
        digest=request_hash({"order": str(order_id), **body.model_dump(mode="json")}),
        now=now(),
        enqueue=enqueue,
        render=lambda refund: refund_out(refund).model_dump_json(),
    )
    return _answered(answer)


@router.get(
    "/cooperatives/{cooperative_id}/fulfilments",
    response_model=PageOut[FulfilmentQueueItem],
    responses=ERRORS,
)
async def fulfilment_queue(
    session: SessionDep,
    actor: CurrentUser,
    cooperative_id: uuid.UUID,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: Annotated[FulfilmentStatus | None, Query()] = None,
) -> PageOut[FulfilmentQueueItem]:
    page = await orders.fulfilment_queue(
        session, actor, cooperative_id, status=status, limit=limit, cursor=cursor
    )
    return PageOut(
        items=[
            FulfilmentQueueItem(
                id=f.id,
                order_id=f.order_id,
                cooperative_id=f.cooperative_id,
                status=f.status.value,
                items_fen=f.items_fen,
                created_at=f.created_at,
            )
            for f in page.items
        ],
        next_cursor=page.next_cursor,
    )
