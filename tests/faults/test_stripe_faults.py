"""The Stripe fake answers 500s and timeouts on a third of the calls.

The app runs in-process on a committed database of its own and talks over real
HTTP to a FakeStripe (tests/fakes/stripe_server.py) that meets every third API
call with a fault, queued with the fake's own knobs: alternately a 500, a
timeout, a 500, and a timeout after Stripe did the work (the answer lost). The
stripe library retries within a call; buyers retry a failed checkout with the
same Idempotency-Key, the worker retries its jobs. Some buyers pay at once, some
only after their reservation ran out, some give up after their first error. The
expiry is `flows.expire_due` with `now` an hour ahead (what the periodic task does
with the clock); the intent cancellations and refunds it leads to are run by a
real Worker, its backoff knob at 50 ms instead of 10 s and more.

No order may get two PaymentIntents or be charged twice, and no order may stay
reserved past its expiry: every unpaid order is cancelled once, its stock given
back once and its intent cancelled; a payment arriving after the expiry is
refunded once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from services.jobs.models import Job
from services.jobs.service import Worker, enqueue, load_handlers
from services.orders import flows
from services.orders.models import Order, OrderEvent, OrderStatus, PaymentStatus
from services.payments.models import Payment, Refund, RefundState
from tests.fakes.stripe_server import FakeStripe, FakeStripeServer, serve_fake_stripe
from tests.faults.helpers import auth, stock_discrepancies
from tests.faults.stripe_app import Live, intent_of, live_app
from tests.orders_helpers import cart

pytestmark = [pytest.mark.faults, pytest.mark.slow]

BUYERS = 40
CLIENT_TIMEOUT = 0.5  # the app's Stripe timeout
HELD = 1.5  # how long a "timed out" call is held by the fake: past the client's timeout
CHECKOUT_TRIES = 12
PAYMENT_JOBS = ("payments.cancel_intent", "payments.execute_refund")


class EveryThirdCallFails:
    """ASGI middleware of the fake: every third call meets a fault the fake injects.

    The fault is queued with FakeStripe's public knobs just before the call
    reaches it, so the fake records it like any other (`RecordedRequest.fault`).
    """

    def __init__(self, app: ASGIApp, *, fake: FakeStripe, held: float) -> None:
        self.app = app
        self.fake = fake
        self.held = held
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls += 1
            if self.calls % 3 == 0:
                kind = (self.calls // 3) % 4
                if kind in (0, 2):
                    self.fake.fail_next(1, status=500)
                else:
                    self.fake.timeout_next(1, seconds=self.held, applied=kind == 3)
        await self.app(scope, receive, send)


@pytest.fixture
def flaky_stripe() -> Iterator[FakeStripeServer]:
    fake = FakeStripe(seed=3)
    fake.app.add_middleware(EveryThirdCallFails, fake=fake, held=HELD)
    with serve_fake_stripe(fake) as server:
        yield server


@pytest.fixture
async def live(
    server_url: str, flaky_stripe: FakeStripeServer, tmp_path: Path
) -> AsyncIterator[Live]:
    async with live_app(
        server_url, flaky_stripe, tmp_path, buyers=BUYERS, stripe_timeout_seconds=CLIENT_TIMEOUT
    ) as live:
        yield live


@dataclass
class Checkout:
    index: int
    key: str
    answers: list[httpx.Response]

    @property
    def order(self) -> dict[str, Any] | None:
        done = [a for a in self.answers if a.status_code == 201]
        return done[-1].json() if done else None


async def checkout(live: Live, index: int, *, abandon: bool) -> Checkout:
    """A buyer retrying with the same key until confirmed, or giving up after one error."""
    buyer = live.cast.buyers[index]
    body = cart((live.cast.products[0], 1 + index % 3), (live.cast.products[1], 1), method="stripe")
    done = Checkout(index, uuid.uuid4().hex, [])
    for _ in range(CHECKOUT_TRIES):
        answer = await live.client.post(
            "/v1/checkout", json=body, headers=auth(buyer) | {"Idempotency-Key": done.key}
        )
        done.answers.append(answer)
        if answer.status_code == 201 or abandon:
            break
    return done


async def run_jobs(live: Live) -> None:
    """Run the payment jobs with a real worker until none is left (a minute at most).

    The backoff knob makes the retries come at once instead of after 10 s, 20 s, ...
    """
    worker = Worker(
        live.factory,
        load_handlers(),
        concurrency=16,
        name="flaky-worker",
        backoff=lambda attempt: timedelta(milliseconds=50),
    )
    deadline = asyncio.get_running_loop().time() + 60
    while asyncio.get_running_loop().time() < deadline:
        async with live.factory() as session:
            left = await session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.kind.in_(PAYMENT_JOBS), Job.finished_at.is_(None))
            )
        if not left:
            return
        if not await worker.run_once():
            await asyncio.sleep(0.05)
    raise AssertionError("payment jobs still unfinished after a minute")


@pytest.mark.parametrize("library_retries", [2, 0], ids=["library-retries", "no-library-retries"])
async def test_no_double_charge_and_no_reservation_outlives_its_expiry(
    live: Live, library_retries: int
) -> None:
    """With the library's own retries (as configured), and without them, so that
    every fault reaches our code: the buyer's retry or the worker's."""
    await live.use_library_retries(library_retries)
    fake = live.fake
    abandoning = {i for i in range(BUYERS) if i % 8 == 7}
    checkouts = await asyncio.gather(
        *(checkout(live, i, abandon=i in abandoning) for i in range(BUYERS))
    )

    # The faults were real, and the buyers saw them only as 503s naming their order.
    calls = list(fake.requests)
    faults = Counter(r.fault for r in calls)
    assert faults["fail"] + faults["timeout"] >= len(calls) // 4, faults
    answers = [a for c in checkouts for a in c.answers]
    assert {a.status_code for a in answers} <= {201, 503}
    failed = [a.json() for a in answers if a.status_code == 503]
    assert {f["type"] for f in failed} <= {"/problems/payment-provider-unavailable"}
    for c in checkouts:
        named = {a.json().get("order_id") for a in c.answers if a.status_code == 503}
        ids = {a.json()["id"] for a in c.answers if a.status_code == 201}
        secrets = {a.json()["client_secret"] for a in c.answers if a.status_code == 201}
        assert len(ids) <= 1 and len(secrets) <= 1, "a retry made a second order or intent"
        assert len(named | ids) <= 1, "the retry resumed another order"
        if c.index not in abandoning:
            assert c.order is not None, f"checkout {c.index} never confirmed: {c.answers}"

    # Some pay at once; some pay only after their reservation has run out.
    confirmed = {c.index: c.order for c in checkouts if c.order is not None}
    late = {i: order for i, order in confirmed.items() if i % 3 == 1 and i % 2 == 0}
    for i, order in confirmed.items():
        if i % 3 == 0:
            fake.confirm(intent_of(order))
    await live.deliver_new_events()

    later = datetime.now(UTC) + timedelta(hours=1)
    async with live.factory() as session, session.begin():
        expired = await flows.expire_due(session, now=later, enqueue=enqueue)
    async with live.factory() as session:
        orders = {o.id: o for o in (await session.scalars(select(Order))).all()}
    unpaid = {o.id for o in orders.values() if o.payment_status is PaymentStatus.unpaid}
    assert expired == len(unpaid) > 0

    for order in late.values():
        fake.confirm(intent_of(order))  # the buyer paid as the reservation ran out
    await live.deliver_new_events()
    assert live.outcomes["late-payment-refunded"] == len(late) > 0

    await run_jobs(live)
    await live.deliver_new_events()  # everything Stripe said meanwhile, in order

    faults = Counter(r.fault for r in list(fake.requests))
    print(  # the figures of the run, for whoever reads `pytest -s`
        f"\nflaky stripe: {sum(faults.values())} calls, faults {dict(faults)}, "
        f"checkout answers {dict(Counter(a.status_code for a in answers))}, "
        f"webhook outcomes {dict(live.outcomes)}"
    )
    await _assert_books(live, orders, late_paid={order["id"] for order in late.values()})


async def _assert_books(live: Live, orders: dict[uuid.UUID, Order], *, late_paid: set[str]) -> None:
    fake = live.fake
    async with live.factory() as session:
        final = {
            o.id: o
            for o in (
                await session.scalars(select(Order).execution_options(populate_existing=True))
            ).all()
        }
        payments = {p.order_id: p for p in (await session.scalars(select(Payment))).all()}
        refunds = (await session.scalars(select(Refund))).all()
        cancellations = Counter(
            (
                await session.scalars(
                    select(OrderEvent.order_id).where(OrderEvent.to_status == "cancelled")
                )
            ).all()
        )
        jobs = (await session.scalars(select(Job).where(Job.kind.in_(PAYMENT_JOBS)))).all()
        stock = await stock_discrepancies(session, live.cast.initial_stock)
    assert set(final) == set(orders)

    # One PaymentIntent per order, asked for under the order's key, charged at most once.
    intents_by_order: dict[str, list[dict[str, Any]]] = {}
    for created in list(fake.payment_intents.values()):
        intents_by_order.setdefault(created["metadata"]["order_id"], []).append(created)
    assert all(len(intents) == 1 for intents in intents_by_order.values()), "two intents"
    intent_for = {order_id: intents[0] for order_id, intents in intents_by_order.items()}
    for request in list(fake.requests):
        if request.endpoint == "POST /v1/payment_intents":
            metadata = request.params.get("metadata")
            assert isinstance(metadata, dict)
            assert request.idempotency_key == f"order:{metadata['order_id']}:pi"
    charges = Counter(ch["payment_intent"] for ch in list(fake.charges.values()))
    assert max(charges.values()) == 1, "an intent was charged twice"
    for order_id, payment in payments.items():
        if payment.provider_payment_id is not None:
            assert intent_for[str(order_id)]["id"] == payment.provider_payment_id

    # Paid orders are confirmed; every other order was cancelled exactly once.
    for order_id, order in final.items():
        intent = intent_for.get(str(order_id))
        if (
            intent is not None
            and intent["status"] == "succeeded"
            and str(order_id) not in late_paid
        ):
            assert (order.status, order.payment_status) == (
                OrderStatus.confirmed,
                PaymentStatus.paid,
            )
            assert order.paid_fen == order.total_fen == intent["amount_received"]
            continue
        assert order.status is OrderStatus.cancelled
        assert order.reserved_until is None
        assert cancellations[order_id] == 1
        if str(order_id) in late_paid:
            # Paid after it expired: refunded in full, once, at Stripe and in our books.
            assert intent is not None
            stripe_refunds = [
                r for r in list(fake.refunds.values()) if r["payment_intent"] == intent["id"]
            ]
            assert [r["amount"] for r in stripe_refunds] == [order.total_fen]
            ours = [r for r in refunds if r.order_id == order_id]
            assert [(r.state, r.amount_fen) for r in ours] == [
                (RefundState.succeeded, order.total_fen)
            ]
            assert (order.payment_status, order.refunded_fen) == (
                PaymentStatus.refunded,
                order.total_fen,
            )
        elif payments[order_id].provider_payment_id is not None:
            assert intent is not None and intent["status"] == "canceled"
    assert not [o for o in final.values() if o.status is OrderStatus.awaiting_payment]

    # Each job ran to its end once; no refund anywhere but for the late payments.
    assert all(j.finished_at is not None and j.failed_at is None for j in jobs)
    assert len({j.dedupe_key for j in jobs}) == len(jobs)
    assert {str(r.order_id) for r in refunds} == late_paid
    assert stock == []

    # Left open at Stripe: an intent made for a checkout abandoned while Stripe's answer
    # was lost. We never learnt its id, so the expiry cannot cancel it; nobody has its
    # client secret either, so nobody can pay it.
    orphans = [
        intent
        for order_id, intent in intent_for.items()
        if payments[uuid.UUID(order_id)].provider_payment_id is None
    ]
    assert {i["status"] for i in orphans} <= {"requires_payment_method"}
    print(f"intents left open at Stripe for abandoned checkouts: {len(orphans)}")
