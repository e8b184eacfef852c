"""A worker killed with SIGKILL in the middle of its work: the work completes once after restart.

Two cases, each on a committed database of its own:

- The expiry run (`orders.expire_reservations`, a periodic task of the real
  `marketplace worker`) over 120 Stripe orders whose reservations the test moves
  an hour into the past (an UPDATE: the shortest setting is a minute). The test
  holds a row lock on the payment of the 61st, so the run stops there with 60
  orders cancelled in its open transaction; then the worker is killed. Nothing of that run may be
  committed, and a new `marketplace worker` must cancel every order exactly
  once, return the stock once and cancel each PaymentIntent once.
- A job (`payments.cancel_intent`): Stripe does the cancellation but holds the
  answer, and the worker is killed while it waits. Its jobs stay leased to the
  dead worker until the lease runs out; the CLI leases for 5 minutes and has no
  option for it, so both workers here are tests/faults/worker_process.py, the
  CLI's setup with a 3-second lease. The second worker claims them again, Stripe
  replays its answer to the same idempotency key, and each job finishes once.

(The issue also names an export job killed mid-run: exports do not exist yet.)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.main import create_app
from services.db import create_engine, session_factory
from services.jobs.models import Job, JobSchedule
from services.jobs.service import enqueue
from services.orders import flows
from services.orders.models import Order, OrderEvent, OrderStatus
from services.payments.models import Payment
from tests.conftest import _asyncpg_args
from tests.fakes.stripe_server import FakeStripe, FakeStripeServer
from tests.faults.helpers import (
    app_settings,
    auth,
    committed_database,
    eventually,
    seed,
    service_env,
    spawn,
    stock_books,
    stock_discrepancies,
    stop,
)
from tests.faults.stripe_app import intent_of
from tests.orders_helpers import WEBHOOK_SECRET, cart

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CANCEL = "POST /v1/payment_intents/{id}/cancel"
CANCEL_JOB = "payments.cancel_intent"
EXPIRY = "orders.expire_reservations"


async def unpaid_orders(
    url: str, stripe: FakeStripeServer, data_dir: Path, count: int
) -> list[tuple[uuid.UUID, str]]:
    """`count` Stripe orders waiting for payment: (order id, intent id), oldest first."""
    cast = await seed(url, cooperatives=1, stock=10_000, buyers=8)
    settings = app_settings(
        url,
        data_dir,
        stripe_secret_key="sk_test_kill",
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=stripe.url,
    )
    app = create_app(settings)
    placed = []
    try:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://kill") as client:
            for n in range(count):
                answer = await client.post(
                    "/v1/checkout",
                    json=cart((cast.products[0], 1 + n % 3), method="stripe"),
                    headers=auth(cast.buyers[n % 8]) | {"Idempotency-Key": uuid.uuid4().hex},
                )
                assert answer.status_code == 201, answer.text
                order = answer.json()
                placed.append((uuid.UUID(order["id"]), intent_of(order)))
    finally:
        await app.state.stripe.aclose()
        await app.state.engine.dispose()
    return placed


def worker_env(url: str, stripe: FakeStripeServer, data_dir: Path, **extra: str) -> dict[str, str]:
    return service_env(
        url,
        data_dir,
        MARKETPLACE_STRIPE_SECRET_KEY="sk_test_kill",
        MARKETPLACE_STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        MARKETPLACE_STRIPE_API_BASE=stripe.url,
        **extra,
    )


async def test_an_expiry_run_killed_midway_is_redone_once_by_the_next_worker(
    server_url: str, own_stripe: FakeStripeServer, tmp_path: Path
) -> None:
    processes: list[subprocess.Popen[bytes]] = []
    async with committed_database(server_url, "marketplace_kill_expiry") as url:
        placed = await unpaid_orders(url, own_stripe, tmp_path, 120)
        order_ids = [order_id for order_id, _ in placed]
        engine = create_engine(url)
        factory = session_factory(engine)
        monitor = await asyncpg.connect(**_asyncpg_args(url))
        blocker = await asyncpg.connect(**_asyncpg_args(url))
        try:
            async with factory() as session, session.begin():
                # Their reservations ran out an hour ago, one second apart, so the run
                # takes them in this order.
                for n, order_id in enumerate(order_ids):
                    await session.execute(
                        update(Order)
                        .where(Order.id == order_id)
                        .values(reserved_until=func.now() - timedelta(hours=1, seconds=-n))
                    )
                initial = {
                    product_id: sum(books)
                    for product_id, books in (await stock_books(session)).items()
                }

            holding = blocker.transaction()
            await holding.start()
            await blocker.execute(
                "SELECT 1 FROM payments WHERE order_id = $1 FOR UPDATE", order_ids[60]
            )
            blocker_pid = await blocker.fetchval("SELECT pg_backend_pid()")

            log = tmp_path / "workers.log"
            env = worker_env(url, own_stripe, tmp_path / "data")
            first = spawn([sys.executable, "-m", "app.cli", "worker"], env, log)
            processes.append(first)
            stuck: list[asyncpg.Record] = []

            async def run_is_stuck() -> bool:
                stuck[:] = await monitor.fetch(
                    "SELECT pid, backend_xid IS NOT NULL AS wrote FROM pg_stat_activity"
                    " WHERE $1 = ANY(pg_blocking_pids(pid))",
                    blocker_pid,
                )
                return bool(stuck)

            await eventually(run_is_stuck, within=60, what="the expiry run reaching order 61")
            # Stuck mid-run, having written: 60 orders cancelled, not committed.
            assert [row["wrote"] for row in stuck] == [True]
            first.kill()
            assert first.wait(30) == -signal.SIGKILL

            # The dead worker's server process still waits for the lock; once it has
            # it, it finds its client gone and the whole run is rolled back.
            orphan = stuck[0]["pid"]
            await holding.rollback()

            async def orphan_gone() -> bool:
                return not await monitor.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", orphan
                )

            await eventually(orphan_gone, within=30, what="the killed run's session ending")
            async with factory() as session:
                assert await _cancelled(session) == 0, "the killed run committed something"
                schedule = await session.get(JobSchedule, EXPIRY)
                assert schedule is not None and schedule.last_run_at is None

            second = spawn([sys.executable, "-m", "app.cli", "worker"], env, log)
            processes.append(second)

            async def all_cancelled_and_told() -> bool:
                async with factory() as session:
                    done = await _cancelled(session) == len(order_ids)
                    return done and await _unfinished_cancel_jobs(session) == 0

            await eventually(all_cancelled_and_told, within=60, what="the expiry after restart")
            assert stop(second) == 0, log.read_text(errors="replace")[-3000:]

            async with factory() as session:
                cancellations = Counter(
                    (
                        await session.scalars(
                            select(OrderEvent.order_id).where(OrderEvent.to_status == "cancelled")
                        )
                    ).all()
                )
                orders = (await session.scalars(select(Order))).all()
                jobs = (await session.scalars(select(Job).where(Job.kind == CANCEL_JOB))).all()
                schedule = await session.get(JobSchedule, EXPIRY, populate_existing=True)
                books = await stock_discrepancies(session, initial)
        finally:
            _kill_left(processes)
            await blocker.close()
            await monitor.close()
            await engine.dispose()

    assert cancellations == dict.fromkeys(order_ids, 1)
    assert {(o.status, o.reserved_until) for o in orders} == {(OrderStatus.cancelled, None)}
    assert books == []
    assert sorted(j.payload["intent_id"] for j in jobs) == sorted(i for _, i in placed)
    assert all(j.finished_at is not None and j.attempts == 1 for j in jobs)
    assert schedule is not None and schedule.last_run_at is not None
    assert schedule.last_error is None
    stripe = own_stripe.state
    assert {stripe.payment_intents[i]["status"] for _, i in placed} == {"canceled"}
    assert _cancelled_at_stripe(stripe) == dict.fromkeys((i for _, i in placed), 1)


async def test_a_job_whose_worker_was_killed_runs_again_after_its_lease_and_completes_once(
    server_url: str, own_stripe: FakeStripeServer, tmp_path: Path
) -> None:
    stripe = own_stripe.state
    processes: list[subprocess.Popen[bytes]] = []
    async with committed_database(server_url, "marketplace_kill_job") as url:
        placed = await unpaid_orders(url, own_stripe, tmp_path, 8)
        engine = create_engine(url)
        factory = session_factory(engine)
        try:
            async with factory() as session, session.begin():
                later = datetime.now(UTC) + timedelta(hours=1)
                assert await flows.expire_due(session, now=later, enqueue=enqueue) == 8

            # Stripe cancels the first four intents asked for, and holds the answers.
            stripe.timeout_next(4, seconds=120, applied=True, endpoint=CANCEL)
            log, data = tmp_path / "workers.log", tmp_path / "data"
            worker = [sys.executable, "-m", "tests.faults.worker_process", "--lease", "3"]
            # A patient first worker: it is still waiting for Stripe when it is killed.
            patient = worker_env(url, own_stripe, data, MARKETPLACE_STRIPE_TIMEOUT_SECONDS="300")
            first = spawn([*worker, "--concurrency", "4"], patient, log)
            processes.append(first)

            async def four_held() -> bool:
                held = [r for r in list(stripe.requests) if r.endpoint == CANCEL and r.fault]
                return len(held) == 4

            await eventually(four_held, within=60, what="four cancellations held by Stripe")
            first.kill()
            assert first.wait(30) == -signal.SIGKILL
            async with factory() as session:
                leased = (
                    await session.scalars(
                        select(Job).where(Job.kind == CANCEL_JOB, Job.finished_at.is_(None))
                    )
                ).all()
                assert len(leased) == 8
                assert sum(j.locked_by is not None for j in leased) == 4

            second = spawn([*worker, "--concurrency", "4"], worker_env(url, own_stripe, data), log)
            processes.append(second)

            async def all_finished() -> bool:
                async with factory() as session:
                    return await _unfinished_cancel_jobs(session) == 0

            await eventually(all_finished, within=60, what="the jobs after restart")
            assert stop(second) == 0, log.read_text(errors="replace")[-3000:]
            async with factory() as session:
                jobs = (await session.scalars(select(Job).where(Job.kind == CANCEL_JOB))).all()
                payments = (await session.scalars(select(Payment))).all()
        finally:
            _kill_left(processes)
            await engine.dispose()

    # Each job finished once: the four killed ones on their second attempt.
    assert all(j.finished_at is not None and j.failed_at is None for j in jobs)
    assert sorted(j.attempts for j in jobs) == [1, 1, 1, 1, 2, 2, 2, 2]
    assert {p.state.value for p in payments} == {"canceled"}
    # Stripe cancelled each intent once; the retries got its first answer replayed.
    intents = [i for _, i in placed]
    assert {stripe.payment_intents[i]["status"] for i in intents} == {"canceled"}
    assert _cancelled_at_stripe(stripe) == dict.fromkeys(intents, 1)
    replayed = [r for r in list(stripe.requests) if r.endpoint == CANCEL and r.replayed]
    assert len(replayed) == 4


async def _cancelled(session: AsyncSession) -> int:
    cancelled = await session.scalar(
        select(func.count()).select_from(Order).where(Order.status == OrderStatus.cancelled)
    )
    return int(cancelled or 0)


async def _unfinished_cancel_jobs(session: AsyncSession) -> int:
    unfinished = await session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.kind == CANCEL_JOB, Job.finished_at.is_(None))
    )
    return int(unfinished or 0)


def _cancelled_at_stripe(stripe: FakeStripe) -> Counter[str]:
    return Counter(
        e["data"]["object"]["id"]
        for e in list(stripe.events)
        if e["type"] == "payment_intent.canceled"
    )


def _kill_left(processes: list[subprocess.Popen[bytes]]) -> None:
    """A failed test must not leave a worker behind."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
