"""A worker killed with SIGKILL in the middle of its work: the work completes once after restart.

Three cases, each on a committed database of its own:

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
- An export job (`exports.run`, the household-year rows of 120 households as
  JSON Lines), killed midway. A trigger of the test's own makes the export's
  first progress report, after its first batch of 40 rows, wait for an advisory
  lock the test holds: the job stops with its status `running` and those 40 rows
  in the file of its work folder. (A CSV is one COPY whose output arrives in
  chunks the network decides: its first report may come with the whole file.)
  Nothing of the attempt may be visible as done; once the lease (3 seconds, as
  above) has run out, a second worker writes the export once, with the manifest
  of the file it leaves, and the killed attempt's work folder is gone.
"""

from __future__ import annotations

import hashlib
import json
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
from services.exports.pseudonyms import pseudonym
from services.exports.service import EXPORT_JOB
from services.jobs.models import Job, JobSchedule
from services.jobs.service import enqueue
from services.orders import flows
from services.orders.models import Order, OrderEvent, OrderStatus
from services.payments.models import Payment
from services.users.models import Role, User
from tests.assessment_helpers import THIS_YEAR
from tests.conftest import _PASSWORD_HASH, _asyncpg_args
from tests.factories import Builder, build_regions
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

# The advisory lock an export's first progress report with rows written waits for
# (the report that sets `running` writes none), through a trigger of the test's own
# database. Shared, so that it holds up nothing but that report.
HOLD = 7_423_110_901
BATCH = 40  # rows an export reads at a time in that test (of 120)
HOLD_PROGRESS = f"""
CREATE FUNCTION hold_export_progress() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared({HOLD});
    RETURN NEW;
END $$;
CREATE TRIGGER hold_export_progress BEFORE UPDATE ON exports FOR EACH ROW
    WHEN (NEW.rows_written > 0) EXECUTE FUNCTION hold_export_progress();
"""


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


async def households_to_export(url: str, count: int) -> tuple[User, User, str, list[uuid.UUID]]:
    """An admin, an officer of the county, the county's code and `count` of its households."""
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session, session.begin():
            admin = User(email="admin@example.com", password_hash=_PASSWORD_HASH, role=Role.admin)
            session.add(admin)
            await session.flush()
            world = Builder(session, admin, await build_regions(session))
            officer = User(
                email="officer@example.com",
                password_hash=_PASSWORD_HASH,
                role=Role.officer,
                county_code=world.county.county,
            )
            session.add(officer)
            households = [(await world.household()).id for _ in range(count)]
    finally:
        await engine.dispose()
    return admin, officer, world.county.county, households


async def test_an_export_whose_worker_was_killed_midway_is_written_once_after_its_lease(
    server_url: str, tmp_path: Path
) -> None:
    processes: list[subprocess.Popen[bytes]] = []
    async with committed_database(server_url, "marketplace_kill_export") as url:
        admin, officer, county, households = await households_to_export(url, 120)
        data = tmp_path / "data"
        settings = app_settings(url, data)
        folder = settings.export_path  # where the workers of `data` write, too
        app = create_app(settings)
        monitor = await asyncpg.connect(**_asyncpg_args(url))
        blocker = await asyncpg.connect(**_asyncpg_args(url))
        try:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://kill") as client:
                answer = await client.put(
                    f"/v1/assessment/thresholds/{THIS_YEAR}",
                    json={"poverty_line_yuan": 100, "monitoring_line_yuan": 150},
                    headers=auth(admin),
                )
                assert answer.status_code in (200, 201), answer.text
                answer = await client.post(
                    "/v1/exports",
                    json={
                        "table": "household_year",
                        "format": "jsonl",
                        "region": county,
                        "year": THIS_YEAR,
                    },
                    headers=auth(officer),
                )
                assert answer.status_code == 202, answer.text
                export_id = uuid.UUID(answer.json()["id"])
                location = answer.headers["Location"]
                name = f"household_year-{county}-{THIS_YEAR}-{export_id}.jsonl"
                work = folder / f".work-{export_id}"

                await monitor.execute(HOLD_PROGRESS)
                holding = blocker.transaction()
                await holding.start()
                await blocker.execute("SELECT pg_advisory_xact_lock($1)", HOLD)
                blocker_pid = await blocker.fetchval("SELECT pg_backend_pid()")

                log = tmp_path / "workers.log"
                env = service_env(url, data)
                worker = [sys.executable, "-m", "tests.faults.worker_process", "--lease", "3"]
                # A report after each batch of 40 rows: the first one comes mid-file.
                batches = ["--export-batch-rows", str(BATCH), "--export-progress-every", str(BATCH)]
                first = spawn([*worker, *batches], env, log)
                processes.append(first)
                held: list[int] = []

                async def report_is_held() -> bool:
                    held[:] = [
                        row["pid"]
                        for row in await monitor.fetch(
                            "SELECT pid FROM pg_stat_activity"
                            " WHERE $1 = ANY(pg_blocking_pids(pid))",
                            blocker_pid,
                        )
                    ]
                    return bool(held)

                await eventually(report_is_held, within=60, what="the export's first report")
                # Mid-export: `running` (a report committed apart from the job), a batch
                # of rows in the file of its work folder, no manifest.
                assert len(held) == 1
                export = await monitor.fetchrow(
                    "SELECT status, rows_expected, rows_written, file_name, sha256"
                    " FROM exports WHERE id = $1",
                    export_id,
                )
                assert dict(export) == {
                    "status": "running",
                    "rows_expected": len(households),
                    "rows_written": 0,
                    "file_name": None,
                    "sha256": None,
                }
                assert (_files_in(folder), _files_in(work)) == ([work.name], [name])
                first.kill()
                assert first.wait(30) == -signal.SIGKILL

                # The dead worker's report still waits for the lock; once it has it, it
                # finds its client gone and rolls back.
                orphan = held[0]
                await holding.rollback()

                async def orphan_gone() -> bool:
                    return not await monitor.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", orphan
                    )

                await eventually(orphan_gone, within=30, what="the killed report's session ending")
                await monitor.execute("DROP TRIGGER hold_export_progress ON exports")

                # Nothing of the killed attempt is done: no manifest, no file to download.
                killed = (await client.get(location, headers=auth(officer))).json()
                assert (killed["status"], killed["rows_written"], killed["manifest"]) == (
                    "running",
                    0,
                    None,
                )
                refused = await client.get(f"{location}/download", headers=auth(officer))
                assert refused.status_code == 409
                assert refused.json()["type"] == "/problems/export-not-done"
                # Its half file stays in its work folder, under no final name, until the
                # job runs again.
                assert (_files_in(folder), _files_in(work)) == ([work.name], [name])
                half = (work / name).read_bytes()
                job = await monitor.fetchrow(
                    "SELECT attempts, locked_by, finished_at FROM jobs WHERE kind = $1",
                    EXPORT_JOB,
                )
                assert job["attempts"] == 1 and job["locked_by"] is not None
                assert job["finished_at"] is None

                second = spawn(worker, env, log)
                processes.append(second)

                async def export_done() -> bool:
                    status = await monitor.fetchval(
                        "SELECT status FROM exports WHERE id = $1", export_id
                    )
                    return bool(status == "done")

                await eventually(export_done, within=60, what="the export after restart")
                assert stop(second) == 0, log.read_text(errors="replace")[-3000:]

                done = (await client.get(location, headers=auth(officer))).json()
                download = await client.get(f"{location}/download", headers=auth(officer))
            jobs = await monitor.fetch(
                "SELECT attempts, finished_at, failed_at FROM jobs WHERE kind = $1", EXPORT_JOB
            )
            left = _files_in(folder)
            key = settings.export_pseudonym_secret  # what the workers of `data` used
        finally:
            _kill_left(processes)
            await blocker.close()
            await monitor.close()
            await app.state.engine.dispose()

    manifest = done["manifest"]
    assert done["status"] == "done"
    assert done["rows_written"] == manifest["rows"] == len(households)
    assert manifest["file_name"] == name
    assert download.status_code == 200, download.text
    assert hashlib.sha256(download.content).hexdigest() == manifest["sha256"]
    assert len(download.content) == manifest["bytes"]
    lines = download.content.splitlines(keepends=True)
    assert sorted(json.loads(line)["household_pseudonym"] for line in lines) == sorted(
        pseudonym(key, household) for household in households
    )
    # The killed attempt had written its first batch, the start of the same file (a
    # batch, some 26 kB, is more than the file's buffer: it went to disk at once).
    assert half == b"".join(lines[:BATCH])
    # Run twice, finished once; the final file alone is left, its work folder gone.
    assert [(j["attempts"], j["finished_at"] is not None, j["failed_at"]) for j in jobs] == [
        (2, True, None)
    ]
    assert left == [name]


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


def _files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _kill_left(processes: list[subprocess.Popen[bytes]]) -> None:
    """A failed test must not leave a worker behind."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
