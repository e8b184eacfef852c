"""Background jobs on PostgreSQL: the outbox, retries, leases, races and periodic tasks.

Workers need committed data on separate connections, so these tests use their
own sessionmaker on the session's engine instead of the rolled-back `session`,
give every test its own job kind (workers claim only the kinds they know, so
tests never see each other's jobs) and delete what they committed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import (
    Column,
    Integer,
    Interval,
    MetaData,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.db import session_factory
from services.jobs.models import Job, JobSchedule
from services.jobs.service import (
    JobRegistry,
    Retry,
    Worker,
    enqueue,
    load_handlers,
    purge_finished,
)
from services.jobs.worker import BACKOFF_CAP, default_backoff
from tests.conftest import _asyncpg_args, create_database, drop_database

NO_BACKOFF = timedelta(0)

# What handlers write, to count their committed effects; not part of the schema.
_scratch = MetaData()
effects = Table(
    f"job_effects_{uuid.uuid4().hex[:8]}",
    _scratch,
    Column("kind", Text, nullable=False),
    Column("n", Integer, nullable=False),
)


@pytest.fixture(scope="module")
async def effects_table(engine: AsyncEngine) -> AsyncIterator[Table]:
    async with engine.begin() as conn:
        await conn.run_sync(_scratch.create_all)
    yield effects
    async with engine.begin() as conn:
        await conn.run_sync(_scratch.drop_all)


class Queue:
    """One test's corner of the queue: a unique kind, a fresh registry, committed sessions."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], effects: Table) -> None:
        self.sessionmaker = sessionmaker
        self.effects = effects
        self.kind = f"test.{uuid.uuid4().hex[:12]}"
        self.registry = JobRegistry()

    def worker(self, **options: Any) -> Worker:
        options.setdefault("backoff", lambda attempt: NO_BACKOFF)
        return Worker(self.sessionmaker, self.registry, **options)

    async def enqueue(self, payload: dict[str, Any] | None = None, **options: Any) -> int | None:
        async with self.sessionmaker() as session, session.begin():
            return await enqueue(session, self.kind, payload or {}, **options)

    async def jobs(self) -> list[Job]:
        async with self.sessionmaker() as session:
            rows = await session.scalars(
                select(Job).where(Job.kind.startswith(self.kind)).order_by(Job.id)
            )
            return list(rows)

    async def job(self) -> Job:
        (job,) = await self.jobs()
        return job

    async def due_in(self, job_id: int) -> timedelta:
        async with self.sessionmaker() as session:
            result = await session.execute(
                select(type_coerce(Job.run_at - func.now(), Interval)).where(Job.id == job_id)
            )
            return result.scalar_one()

    async def make_due(self) -> None:
        """Travel past every backoff and Retry: the jobs of this test are due now."""
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(Job).where(Job.kind.startswith(self.kind)).values(run_at=func.now())
            )

    async def record(self, session: AsyncSession, n: int) -> None:
        await session.execute(insert(self.effects).values(kind=self.kind, n=n))

    async def recorded(self) -> list[int]:
        async with self.sessionmaker() as session:
            rows = await session.scalars(
                select(self.effects.c.n).where(self.effects.c.kind == self.kind)
            )
            return sorted(rows)


@pytest.fixture
async def queue(engine: AsyncEngine, effects_table: Table) -> AsyncIterator[Queue]:
    q = Queue(session_factory(engine), effects_table)
    yield q
    async with q.sessionmaker() as session, session.begin():
        await session.execute(delete(Job).where(Job.kind.startswith(q.kind)))
        await session.execute(delete(JobSchedule).where(JobSchedule.name.startswith(q.kind)))
        await session.execute(delete(effects_table).where(effects_table.c.kind == q.kind))


async def run_until_idle(worker: Worker) -> int:
    ran = 0
    while n := await worker.run_once():
        ran += n
    return ran


async def eventually(condition: Any, *, within: float = 10.0) -> None:
    """Poll `condition` (an async callable) until true; only where time must really pass."""
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# -- the outbox ---------------------------------------------------------------


async def test_a_job_enqueued_in_a_rolled_back_transaction_does_not_exist(queue):
    ran: list[dict[str, Any]] = []

    @queue.registry.handler(queue.kind)
    async def handle(session, payload):
        ran.append(payload)

    async with queue.sessionmaker() as session:
        assert await enqueue(session, queue.kind, {"order": "o-1"}) is not None
        await session.rollback()

    assert await queue.jobs() == []
    assert await queue.worker().run_once() == 0
    assert ran == []


async def test_a_job_reaches_workers_only_when_its_transaction_commits(queue):
    ran: list[dict[str, Any]] = []

    @queue.registry.handler(queue.kind)
    async def handle(session, payload):
        ran.append(payload)

    worker = queue.worker()
    async with queue.sessionmaker() as session:
        await enqueue(session, queue.kind, {"order": "o-1"})
        assert await worker.run_once() == 0
        await session.commit()
    assert await worker.run_once() == 1
    assert ran == [{"order": "o-1"}]


async def test_a_handlers_writes_commit_with_the_jobs_completion(queue):
    @queue.registry.handler(queue.kind)
    async def handle(session, payload):
        await queue.record(session, payload["n"])

    await queue.enqueue({"n": 7})
    assert await queue.worker().run_once() == 1

    job = await queue.job()
    assert await queue.recorded() == [7]
    assert job.finished_at is not None
    assert (job.attempts, job.failed_at, job.locked_by, job.locked_until) == (1, None, None, None)


async def test_a_failing_handler_leaves_no_writes_and_its_job_pending(queue):
    @queue.registry.handler(queue.kind)
    async def handle(session, payload):
        await queue.record(session, payload["n"])
        raise RuntimeError("the courier's API is down")

    await queue.enqueue({"n": 7})
    assert await queue.worker().run_once() == 1

    job = await queue.job()
    assert await queue.recorded() == []
    assert job.finished_at is None and job.failed_at is None
    assert job.attempts == 1
    assert "RuntimeError: the courier's API is down" in (job.last_error or "")
    assert job.locked_by is None


# -- retries ------------------------------------------------------------------


async def test_a_failing_job_backs_off_then_fails_for_good_after_max_attempts(queue):
    calls = 0

    @queue.registry.handler(queue.kind)
    async def handle(session, payload):
        nonlocal calls
        calls += 1
        raise RuntimeError(f"failure {calls}")

    job_id = await queue.enqueue(max_attempts=3)
    assert job_id is not None
    worker = queue.worker(backoff=default_backoff)

    assert await worker.run_once() == 1
    # Attempt 1 waits 10 s with jitter (5 to 10 s) and is not due before.
    assert timedelta(seconds=4) < await queue.due_in(job_id) <= timedelta(seconds=10)
    assert await worker.run_once() == 0

    await queue.make_due()
    assert await worker.run_once() == 1
    assert timedelta(seconds=9) < await queue.due_in(job_id) <= timedelta(seconds=20)
    assert (await queue.job()).failed_at is None

    await queue.make_due()
    assert await worker.run_once() == 1
    job = await queue.job()
    assert job.failed_at is not None and job.finished_at is None
    assert job.attempts == 3
    assert "failure 3" in (job.last_error or "")

    # Kept for inspection, never retried.
    await queue.make_due()
    assert await worker.run_once() == 0
    assert calls == 3


def test_default_backoff_doubles_from_ten_seconds_up_to_an_hour_with_jitter():
    for attempt in range(1, 40):
        full = min(timedelta(seconds=10) * 2 ** min(attempt - 1, 20), BACKOFF_CAP)
        delays = [default_backoff(attempt) for _ in range(50)]
        assert all(full / 2 <= delay <= full for delay in delays)
    assert len({default_backoff(3) for _ in range(20)}) > 1


async def test_retry_reschedules_without_using_an_attempt_or_keeping_writes(queue):
    calls = 0

    @queue.registry.handler(queue.kind)
    async def handle(session, payload):
        nonlocal calls
        calls += 1
        await queue.record(session, calls)
        if calls == 1:
            raise Retry(after=timedelta(minutes=30))

    # One attempt only: a Retry must not use it up.
    job_id = await queue.enqueue(max_attempts=1)
    assert job_id is not None
    worker = queue.worker()

    assert await worker.run_once() == 1
    job = await queue.job()
    assert (job.attempts, job.failed_at, job.finished_at, job.last_error) == (0, None, None, None)
    assert timedelta(minutes=29) < await queue.due_in(job_id) <= timedelta(minutes=30)
    assert await queue.recorded() == []
    assert await worker.run_once() == 0

    await queue.make_due()
    assert await worker.run_once() == 1
    job = await queue.job()
    assert job.finished_at is not None and job.attempts == 1
    assert await queue.recorded() == [2]


# -- dedupe -------------------------------------------------------------------


async def test_a_dedupe_key_makes_enqueueing_a_pending_twin_a_no_op(queue):
    @queue.registry.handler(queue.kind)
    async def handle(session, payload):
        await queue.record(session, payload["n"])

    first = await queue.enqueue({"n": 1}, dedupe_key="order-42")
    assert first is not None
    assert await queue.enqueue({"n": 2}, dedupe_key="order-42") is None
    # The key is per kind, and keyless jobs are never deduplicated.
    async with queue.sessionmaker() as session, session.begin():
        other_kind = await enqueue(session, f"{queue.kind}.other", {}, dedupe_key="order-42")
    assert other_kind is not None
    assert await queue.enqueue({"n": 3}) is not None
    assert await queue.enqueue({"n": 4}) is not None

    worker = queue.worker()
    # While the job is running it is still unfinished: a twin is still a no-op.
    (claimed,) = await worker.claim(1)
    assert claimed.id == first
    assert await queue.enqueue({"n": 5}, dedupe_key="order-42") is None
    await worker.execute(claimed)

    # Once it has finished, the same key makes a new job.
    assert await queue.enqueue({"n": 6}, dedupe_key="order-42") is not None
    await run_until_idle(worker)
    assert await queue.recorded() == [1, 3, 4, 6]


# -- several workers ----------------------------------------------------------


async def test_workers_racing_on_separate_connections_run_each_job_exactly_once(queue):
    calls: Counter[int] = Counter()

    @queue.registry.handler(queue.kind)
    async def handle(session, payload):
        calls[payload["n"]] += 1
        await queue.record(session, payload["n"])

    async with queue.sessionmaker() as session, session.begin():
        for n in range(200):
            await enqueue(session, queue.kind, {"n": n})

    # 3 workers x 4 jobs at once stay within the engine's 15 connections.
    workers = [queue.worker(name=f"racer-{i}", concurrency=4) for i in range(3)]
    ran = await asyncio.gather(*(run_until_idle(worker) for worker in workers))

    assert sum(ran) == 200
    assert sum(1 for n in ran if n) >= 2, f"the workers did not race: {ran}"
    assert calls == Counter(range(200))
    assert await queue.recorded() == list(range(200))
    jobs = await queue.jobs()
    assert all(job.finished_at is not None and job.attempts == 1 for job in jobs)


async def test_a_job_whose_worker_died_runs_again_after_its_lease_and_only_once(queue):
    calls = 0

    @queue.registry.handler(queue.kind)
    async def handle(session, payload):
        nonlocal calls
        calls += 1
        await queue.record(session, calls)

    await queue.enqueue()
    lease = timedelta(milliseconds=300)
    # "Dies": claims the job, then never runs it (as after a SIGKILL).
    dead = queue.worker(name="dead", lease=lease)
    (lost,) = await dead.claim(1)
    alive = queue.worker(name="alive", lease=lease)
    assert await alive.run_once() == 0, "taken over before the lease ran out"

    async def taken_over() -> bool:
        return bool(await alive.run_once() == 1)

    await eventually(taken_over)
    job = await queue.job()
    assert job.finished_at is not None and job.attempts == 2
    assert await queue.recorded() == [1]

    # Should the dead worker come back, its claim is stale: it must not run the job again.
    await dead.execute(lost)
    assert calls == 1
    assert await queue.recorded() == [1]
    assert (await queue.job()).finished_at == job.finished_at


async def test_a_job_running_past_its_lease_is_not_taken_over_while_its_worker_lives(queue):
    started, release = asyncio.Event(), asyncio.Event()
    calls = 0

    @queue.registry.handler(queue.kind)
    async def handle(session, payload):
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        await queue.record(session, calls)

    await queue.enqueue()
    lease = timedelta(milliseconds=200)
    slow = queue.worker(name="slow", lease=lease)
    running = asyncio.create_task(slow.run_once())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(2 * lease.total_seconds())  # let the lease run out

    # The running job's transaction holds its row lock, so the claim skips it.
    other = queue.worker(name="other", lease=lease)
    assert await other.run_once() == 0
    release.set()
    assert await asyncio.wait_for(running, 10) == 1
    assert await other.run_once() == 0
    assert calls == 1
    assert await queue.recorded() == [1]


async def test_a_job_lost_on_its_last_attempt_is_marked_failed_without_running(queue):
    calls = 0

    @queue.registry.handler(queue.kind)
    async def handle(session, payload):
        nonlocal calls
        calls += 1

    await queue.enqueue(max_attempts=1)
    lease = timedelta(milliseconds=200)
    await queue.worker(name="dead", lease=lease).claim(1)
    alive = queue.worker(name="alive", lease=lease)

    async def reclaimed() -> bool:
        return bool(await alive.run_once() == 1)

    await eventually(reclaimed)
    job = await queue.job()
    assert calls == 0
    assert job.failed_at is not None and job.finished_at is None
    assert "abandoned" in (job.last_error or "")


# -- periodic tasks -----------------------------------------------------------


async def schedule_of(queue: Queue, name: str) -> tuple[JobSchedule, timedelta]:
    async with queue.sessionmaker() as session:
        row = (
            await session.execute(
                select(
                    JobSchedule, type_coerce(JobSchedule.next_run_at - func.now(), Interval)
                ).where(JobSchedule.name == name)
            )
        ).one()
        return row[0], row[1]


async def test_a_periodic_task_runs_once_per_interval_across_workers(queue):
    name = f"{queue.kind}.sweep"
    started, others_done = asyncio.Event(), asyncio.Event()
    runs = 0

    @queue.registry.periodic(name, every=timedelta(hours=1))
    async def sweep(session):
        nonlocal runs
        runs += 1
        started.set()
        await others_done.wait()
        await queue.record(session, runs)

    workers = [queue.worker(name=f"w{i}") for i in range(3)]
    first = asyncio.create_task(workers[0].run_once())
    await asyncio.wait_for(started.wait(), 10)
    # While one worker runs the task, the others skip its locked schedule row (no waiting).
    others = asyncio.gather(*(w.run_once() for w in workers[1:]))
    assert await asyncio.wait_for(others, 10) == [0, 0]
    others_done.set()
    assert await asyncio.wait_for(first, 10) == 1

    schedule, next_in = await schedule_of(queue, name)
    assert schedule.last_run_at is not None
    assert timedelta(minutes=59) < next_in <= timedelta(hours=1)
    # Within the interval, nobody runs it again.
    assert await asyncio.gather(*(w.run_once() for w in workers)) == [0, 0, 0]

    # Once the interval has passed, exactly one of them runs it once more.
    async with queue.sessionmaker() as session, session.begin():
        await session.execute(
            update(JobSchedule)
            .where(JobSchedule.name == name)
            .values(next_run_at=func.now() - timedelta(seconds=1))
        )
    assert sorted(await asyncio.gather(*(w.run_once() for w in workers))) == [0, 0, 1]
    assert runs == 2
    assert await queue.recorded() == [1, 2]


async def test_a_failing_periodic_task_is_rolled_back_and_tried_after_its_interval(queue):
    name = f"{queue.kind}.sweep"

    @queue.registry.periodic(name, every=timedelta(minutes=10))
    async def sweep(session):
        await queue.record(session, 1)
        raise RuntimeError("sweep broke")

    worker = queue.worker()
    assert await worker.run_once() == 1
    schedule, next_in = await schedule_of(queue, name)
    assert await queue.recorded() == []
    assert "sweep broke" in (schedule.last_error or "")
    assert timedelta(minutes=9) < next_in <= timedelta(minutes=10)
    assert await worker.run_once() == 0


# -- housekeeping -------------------------------------------------------------


async def test_purge_deletes_jobs_finished_long_ago_and_keeps_failed_and_pending_ones(queue):
    ids = [await queue.enqueue({"n": n}) for n in range(4)]
    async with queue.sessionmaker() as session, session.begin():
        age = {0: "finished_at", 1: "finished_at", 2: "failed_at"}
        days = {0: 8, 1: 1, 2: 30}
        for n, column in age.items():
            await session.execute(
                update(Job)
                .where(Job.id == ids[n])
                .values({column: func.now() - timedelta(days=days[n])})
            )
    async with queue.sessionmaker() as session, session.begin():
        assert await purge_finished(session, older_than=timedelta(days=7)) >= 1
    assert [job.id for job in await queue.jobs()] == ids[1:]
    # The app's registry purges a week's finished jobs every hour.
    purge = {task.name: task for task in load_handlers().periodic_tasks}["jobs.purge_finished"]
    assert purge.every == timedelta(hours=1)


async def test_enqueue_refuses_a_run_at_without_a_time_zone(queue):
    with pytest.raises(ValueError, match="timezone"):
        await queue.enqueue(run_at=datetime(2030, 1, 1))
    assert await queue.enqueue(run_at=datetime(2030, 1, 1, tzinfo=UTC)) is not None


# -- wiring -------------------------------------------------------------------


async def test_the_app_runs_a_worker_between_startup_and_shutdown(settings, engine):
    from app.main import WORKER_STOP_SECONDS, create_app

    app = create_app(settings.model_copy(update={"run_worker_in_process": True}))
    sessionmaker = session_factory(engine)
    app.state.sessionmaker = sessionmaker

    async def purge_ran() -> bool:
        async with sessionmaker() as session:
            last = await session.scalar(
                select(JobSchedule.last_run_at).where(JobSchedule.name == "jobs.purge_finished")
            )
            return last is not None and last >= started_at

    async with sessionmaker() as session:
        started_at: datetime = (await session.execute(select(func.now()))).scalar_one()
    try:
        async with app.router.lifespan_context(app):
            await eventually(purge_ran)
            stopping = time.monotonic()
        assert time.monotonic() - stopping < WORKER_STOP_SECONDS
    finally:
        async with sessionmaker() as session, session.begin():
            await session.execute(
                delete(JobSchedule).where(JobSchedule.name == "jobs.purge_finished")
            )


@pytest.mark.slow
async def test_the_worker_command_works_until_sigterm_and_stops_cleanly(server_url, tmp_path):
    name = f"marketplace_worker_{uuid.uuid4().hex[:10]}"
    url = await create_database(server_url, name)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "MARKETPLACE_DATA_DIR": str(tmp_path),
        "MARKETPLACE_LOG_LEVEL": "INFO",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "worker",
        "--concurrency",
        "2",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    conn = await asyncpg.connect(**_asyncpg_args(url))
    try:

        async def purge_ran() -> bool:
            assert process.returncode is None, "the worker exited early"
            try:
                return bool(
                    await conn.fetchval(
                        "SELECT last_run_at IS NOT NULL FROM job_schedules WHERE name = $1",
                        "jobs.purge_finished",
                    )
                )
            except asyncpg.UndefinedTableError:  # still migrating
                return False

        await eventually(purge_ran, within=60)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()
        assert b"worker stopped" in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await conn.close()
        await drop_database(server_url, name)
