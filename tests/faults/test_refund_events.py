"""Refund events that arrive out of order, or before Stripe's answer: counted once.

Stripe does not promise the order of its events, redelivers what was not
acknowledged, and may tell the webhook about a refund before the refund call
itself has been answered (always, when that answer is lost). These are the
storm and lost-answer faults of the other fault tests, applied to refunds. They
found three bugs, since fixed: a refund is matched by the id we send in its
metadata, a dashboard refund recorded from `charge.refunded` is matched by its
amount when its own event comes, and a refund event for a payment not yet
recorded is answered 503 and delivered again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.jobs.models import Job
from services.jobs.service import Worker, enqueue, load_handlers
from services.orders import flows
from services.orders.models import Order, PaymentStatus
from services.payments.models import Refund, RefundState
from tests.fakes.stripe_server import FakeStripeServer
from tests.faults.helpers import auth
from tests.faults.stripe_app import Live, intent_of, live_app
from tests.orders_helpers import cart

pytestmark = [pytest.mark.faults, pytest.mark.slow]

REFUNDS = "POST /v1/refunds"


@pytest.fixture
async def live(
    server_url: str, own_stripe: FakeStripeServer, tmp_path: Path
) -> AsyncIterator[Live]:
    async with live_app(
        server_url, own_stripe, tmp_path, buyers=4, stripe_timeout_seconds=0.5
    ) as live:
        yield live


async def place(live: Live) -> dict[str, Any]:
    body = cart((live.cast.products[0], 2), (live.cast.products[1], 1), method="stripe")
    answer = await live.client.post(
        "/v1/checkout",
        json=body,
        headers=auth(live.cast.buyers[0]) | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert answer.status_code == 201, answer.text
    order: dict[str, Any] = answer.json()
    return order


async def paid_order(live: Live) -> dict[str, Any]:
    order = await place(live)
    live.fake.confirm(intent_of(order))
    await live.deliver_new_events()
    return order


async def books(live: Live, order_id: str) -> tuple[Order, list[Refund]]:
    async with live.factory() as session:
        order = await session.get(Order, uuid.UUID(order_id))
        assert order is not None
        refunds = (await session.scalars(select(Refund).where(Refund.order_id == order.id))).all()
    return order, list(refunds)


async def run_refund_jobs(live: Live) -> None:
    """Run the refund jobs to their end, finished or failed for good (retries at once)."""
    worker = Worker(
        live.factory, load_handlers(), backoff=lambda attempt: timedelta(milliseconds=20)
    )
    for _ in range(200):
        async with live.factory() as session:
            open_jobs = await session.scalar(
                select(func.count())
                .select_from(Job)
                .where(
                    Job.kind == "payments.execute_refund",
                    Job.finished_at.is_(None),
                    Job.failed_at.is_(None),
                )
            )
        if not open_jobs:
            return
        if not await worker.run_once():
            await asyncio.sleep(0.05)
    raise AssertionError("refund jobs still open")


@pytest.mark.parametrize(
    "arrival",
    [
        "as-sent",
        "charge-refunded-first",
    ],
)
async def test_a_refund_made_in_the_dashboard_counts_once_whatever_the_order_of_its_events(
    live: Live, arrival: str
) -> None:
    order = await paid_order(live)
    async with httpx.AsyncClient(
        base_url=str(live.app.state.settings.stripe_api_base),
        headers={"Authorization": "Bearer sk_test_dashboard"},
    ) as dashboard:
        made = await dashboard.post(
            "/v1/refunds", data={"payment_intent": intent_of(order), "amount": "1000"}
        )
        assert made.status_code == 200, made.text
    events = live.new_events()
    assert [e["type"] for e in events] == ["refund.created", "charge.refunded"]
    if arrival == "charge-refunded-first":
        events.reverse()
    for event in events * 3:  # redelivered, too
        assert (await live.send(event)).status_code == 200

    row, refunds = await books(live, order["id"])
    assert (row.refunded_fen, row.payment_status) == (1000, PaymentStatus.partially_refunded)
    assert [(r.amount_fen, r.state) for r in refunds] == [(1000, RefundState.succeeded)]


async def test_our_partial_refund_reported_by_stripe_before_its_answer_is_recorded_once(
    live: Live,
) -> None:
    order = await paid_order(live)
    # Stripe makes the refund; every answer to the call (and its retries) is lost.
    live.fake.timeout_next(3, seconds=1.0, applied=True, endpoint=REFUNDS)
    asked = await live.client.post(
        f"/v1/orders/{order['id']}/refunds",
        json={"amount_fen": 1000},
        headers=auth(live.cast.admin) | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert asked.status_code == 201 and asked.json()["state"] == "pending", asked.text
    await live.deliver_new_events()  # refund.created and charge.refunded, meanwhile
    await run_refund_jobs(live)

    row, refunds = await books(live, order["id"])
    assert (row.refunded_fen, row.payment_status) == (1000, PaymentStatus.partially_refunded)
    assert [(r.amount_fen, r.state) for r in refunds] == [(1000, RefundState.succeeded)]
    assert refunds[0].provider_refund_id is not None
    async with live.factory() as session:
        failed = await session.scalar(
            select(func.count()).select_from(Job).where(Job.failed_at.is_not(None))
        )
    assert failed == 0


async def test_a_refund_event_before_the_refund_answer_is_never_a_500(live: Live) -> None:
    order = await place(live)
    async with live.factory() as session, session.begin():
        later = datetime.now(UTC) + timedelta(hours=1)
        assert await flows.expire_due(session, now=later, enqueue=enqueue) == 1
    live.fake.confirm(intent_of(order))  # paid as the reservation ran out
    await live.deliver_new_events()
    assert live.outcomes["late-payment-refunded"] == 1

    live.fake.timeout_next(3, seconds=1.0, applied=True, endpoint=REFUNDS)
    worker = Worker(live.factory, load_handlers(), backoff=lambda attempt: timedelta(0))
    await worker.run_once()  # the refund is made at Stripe; the answer never comes
    events = live.new_events()
    answers = [(await live.send(event)).status_code for event in events]
    await run_refund_jobs(live)
    answers += [(await live.send(event)).status_code for event in events]  # redelivered

    assert 500 not in answers, answers
    _, refunds = await books(live, order["id"])
    assert [(r.state, r.provider_refund_id is not None) for r in refunds] == [
        (RefundState.succeeded, True)
    ]
