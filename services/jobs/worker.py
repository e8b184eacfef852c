"""The worker: claims due jobs with SKIP LOCKED and runs them, and runs periodic tasks.

A job's life:
1. Claim: one short transaction leases up to n due jobs to this worker
   (`locked_by`, `locked_until = now() + lease`) and counts the attempt. SKIP
   LOCKED lets any number of workers claim side by side without waiting.
2. Execute: a transaction locks the row again (FOR UPDATE), checks the lease is
   still this claim's, runs the handler and marks the job finished, so the
   handler's writes and the completion commit together. While that transaction
   lives, its row lock keeps other workers off the job even past the lease; if
   the worker dies, PostgreSQL ends the transaction and the job is claimed again
   once the lease has run out.
3. On an exception the transaction is rolled back and a new one records the
   error and a later `run_at` (exponential backoff with jitter), or `failed_at`
   once the attempts are used up. `Retry` reschedules without using an attempt.

All times are the database's (`now()`), so workers on several machines agree.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.jobs.models import Job, JobSchedule
from services.jobs.registry import JobRegistry, Periodic, Retry

logger = logging.getLogger(__name__)

BACKOFF_BASE = timedelta(seconds=10)
BACKOFF_CAP = timedelta(hours=1)
_ERROR_CHARS = 4000


def default_backoff(attempt: int) -> timedelta:
    """Delay after the `attempt`-th failure: 10 s, doubling, at most an hour, jittered.

    The jitter (between half and all of the delay) spreads out jobs that failed
    together, say during an outage of Stripe, so that they do not retry together.
    """
    doublings = min(max(attempt - 1, 0), 20)  # bounded, so that the product stays small
    delay = min(BACKOFF_BASE * (1 << doublings), BACKOFF_CAP)
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 (spreading load, not a secret)


def _spawn(work: Coroutine[Any, Any, None], into: set[asyncio.Task[None]]) -> None:
    task = asyncio.create_task(work)
    into.add(task)
    task.add_done_callback(into.discard)


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job leased to one worker; `attempts` counts this attempt."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    locked_until: datetime


class Worker:
    """Runs the jobs and periodic tasks of `registry`; any number may run at once."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        registry: JobRegistry,
        *,
        name: str | None = None,
        concurrency: int = 4,
        poll_interval: timedelta = timedelta(seconds=1),
        lease: timedelta = timedelta(minutes=5),
        backoff: Callable[[int], timedelta] = default_backoff,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if lease <= timedelta(0) or poll_interval <= timedelta(0):
            raise ValueError("lease and poll_interval must be positive")
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease = lease
        self._sessionmaker = sessionmaker
        self._registry = registry
        self._backoff = backoff
        self._schedules_ready = False

    # -- the loop ------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then let the jobs in flight finish.

        Cancelling the task running this instead cancels those jobs: their
        transactions roll back and they run again once their lease has run out.
        """
        logger.info(
            "worker started",
            extra={"worker": self.name, "kinds": self._registry.kinds},
        )
        jobs: set[asyncio.Task[None]] = set()
        periodic: set[asyncio.Task[None]] = set()
        try:
            await self._loop(stop, jobs, periodic)
        except asyncio.CancelledError:
            for task in jobs | periodic:
                task.cancel()
            raise
        finally:
            await asyncio.gather(*jobs, *periodic, return_exceptions=True)
            logger.info("worker stopped", extra={"worker": self.name})

    async def _loop(
        self,
        stop: asyncio.Event,
        jobs: set[asyncio.Task[None]],
        periodic: set[asyncio.Task[None]],
    ) -> None:
        loop = asyncio.get_running_loop()
        next_periodic = loop.time()
        while not stop.is_set():
            # One periodic pass at a time, at most once per poll interval, beside the
            # jobs (a long sweep does not hold up claiming).
            if not periodic and loop.time() >= next_periodic:
                next_periodic = loop.time() + self.poll_interval.total_seconds()
                _spawn(self._logged(self.run_periodic()), periodic)
            free = self.concurrency - len(jobs)
            claimed: list[ClaimedJob] = []
            if free > 0:
                try:
                    claimed = await self.claim(free)
                except (SQLAlchemyError, OSError):
                    # The database is away: keep the worker alive and try again later.
                    logger.exception("worker could not claim jobs", extra={"worker": self.name})
            for job in claimed:
                _spawn(self._logged(self.execute(job)), jobs)
            # A full batch means more may be due: claim again at once (when a slot frees).
            if free == 0 or len(claimed) < free:
                await self._pause(stop, jobs)

    async def _logged(self, work: Awaitable[object]) -> None:
        # Handler errors are recorded on their job; what reaches here is the
        # database failing under the worker, and the lease brings the job back.
        try:
            await work
        except Exception:
            logger.exception("worker task failed", extra={"worker": self.name})

    async def _pause(self, stop: asyncio.Event, jobs: set[asyncio.Task[None]]) -> None:
        """Wait for the stop signal, a job finishing (a free slot) or the poll interval."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                {stopping, *jobs},
                timeout=self.poll_interval.total_seconds(),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopping.cancel()

    async def run_once(self) -> int:
        """Run the periodic tasks and up to `concurrency` jobs due now; return how many ran."""
        ran = await self.run_periodic()
        jobs = await self.claim(self.concurrency)
        await asyncio.gather(*(self.execute(job) for job in jobs))
        return ran + len(jobs)

    # -- jobs ----------------------------------------------------------------

    async def claim(self, limit: int) -> list[ClaimedJob]:
        """Lease up to `limit` due jobs of the kinds this worker handles."""
        # Only known kinds: a job no worker can run yet stays pending rather than
        # burning its attempts (a new kind during a rolling deploy, say).
        kinds = self._registry.kinds
        if limit < 1 or not kinds:
            return []
        due = (
            select(Job.id)
            .where(
                Job.finished_at.is_(None),
                Job.failed_at.is_(None),
                Job.run_at <= func.now(),
                or_(Job.locked_until.is_(None), Job.locked_until < func.now()),
                Job.kind.in_(kinds),
            )
            .order_by(Job.run_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(Job)
            .where(Job.id.in_(due))
            .values(
                locked_by=self.name,
                locked_until=func.now() + self.lease,
                attempts=Job.attempts + 1,
            )
            .returning(
                Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts, Job.locked_until
            )
            .execution_options(synchronize_session=False)
        )
        async with self._sessionmaker() as session, session.begin():
            rows = (await session.execute(stmt)).all()
        return sorted(
            (
                ClaimedJob(
                    id=row.id,
                    kind=row.kind,
                    payload=row.payload,
                    attempts=row.attempts,
                    max_attempts=row.max_attempts,
                    locked_until=row.locked_until,
                )
                for row in rows
            ),
            key=lambda job: job.id,
        )

    async def execute(self, job: ClaimedJob) -> None:
        """Run one claimed job: its handler's writes and its completion commit together."""
        log = {"worker": self.name, "job_id": job.id, "kind": job.kind, "attempt": job.attempts}
        try:
            async with self._sessionmaker() as session, session.begin():
                if not await self._relock(session, job):
                    logger.warning("job lease lost before it ran; skipped", extra=log)
                    return
                if job.attempts > job.max_attempts:
                    # Claimed again after its last attempt's lease ran out: the
                    # worker running it died, perhaps killed by the job itself.
                    await session.execute(
                        update(Job)
                        .where(Job.id == job.id)
                        .values(
                            failed_at=func.now(),
                            locked_by=None,
                            locked_until=None,
                            last_error=f"abandoned: the worker running attempt "
                            f"{job.max_attempts} stopped before finishing it",
                        )
                    )
                    logger.error("job abandoned after its last attempt", extra=log)
                    return
                handler = self._registry.get(job.kind)
                if handler is None:
                    raise LookupError(f"no handler is registered for job kind {job.kind!r}")
                await handler(session, dict(job.payload))
                await session.execute(
                    update(Job)
                    .where(Job.id == job.id)
                    .values(finished_at=func.now(), locked_by=None, locked_until=None)
                )
        except Retry as retry:
            await self._reschedule(job, retry.after)
            logger.info("job asked to be retried", extra={**log, "after": str(retry.after)})
        except Exception as exc:
            # Whatever the handler raised is kept on the job and retried, never dropped.
            final = await self._record_failure(job, exc)
            level = logging.ERROR if final else logging.WARNING
            message = "job failed for good" if final else "job failed; will retry"
            logger.log(level, message, exc_info=exc, extra=log)

    async def _relock(self, session: AsyncSession, job: ClaimedJob) -> bool:
        row = (
            await session.execute(
                select(Job.locked_by, Job.locked_until, Job.finished_at, Job.failed_at)
                .where(Job.id == job.id)
                .with_for_update()
            )
        ).one_or_none()
        return (
            row is not None
            and row.locked_by == self.name
            and row.locked_until == job.locked_until
            and row.finished_at is None
            and row.failed_at is None
        )

    def _still_ours(self, job: ClaimedJob) -> ColumnElement[bool]:
        # A worker whose lease was taken over must not overwrite the new owner's state.
        return and_(
            Job.id == job.id,
            Job.locked_by == self.name,
            Job.locked_until == job.locked_until,
            Job.finished_at.is_(None),
            Job.failed_at.is_(None),
        )

    async def _record_failure(self, job: ClaimedJob, exc: BaseException) -> bool:
        """Record the error and either a later run or the end; True when it was the last try."""
        final = job.attempts >= job.max_attempts
        values: dict[str, Any] = {
            "last_error": "".join(traceback.format_exception(exc))[-_ERROR_CHARS:],
            "locked_by": None,
            "locked_until": None,
        }
        if final:
            values["failed_at"] = func.now()
        else:
            values["run_at"] = func.now() + self._backoff(job.attempts)
        async with self._sessionmaker() as session, session.begin():
            await session.execute(update(Job).where(self._still_ours(job)).values(**values))
        return final

    async def _reschedule(self, job: ClaimedJob, after: timedelta) -> None:
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                update(Job)
                .where(self._still_ours(job))
                .values(
                    # Asking to wait is not a failure: give the attempt back.
                    attempts=Job.attempts - 1,
                    run_at=func.now() + after,
                    locked_by=None,
                    locked_until=None,
                )
            )

    # -- periodic tasks ------------------------------------------------------

    async def run_periodic(self) -> int:
        """Run each periodic task that is due and not running elsewhere; return how many ran."""
        tasks = self._registry.periodic_tasks
        if not tasks:
            return 0
        if not self._schedules_ready:
            async with self._sessionmaker() as session, session.begin():
                await session.execute(
                    insert(JobSchedule)
                    .values([{"name": task.name, "next_run_at": func.now()} for task in tasks])
                    .on_conflict_do_nothing(index_elements=[JobSchedule.name])
                )
            self._schedules_ready = True
        ran = 0
        for task in tasks:
            ran += await self._run_if_due(task)
        return ran

    async def _run_if_due(self, periodic: Periodic) -> int:
        log = {"worker": self.name, "task": periodic.name}
        seen: datetime | None = None
        try:
            # The schedule row stays locked while the task runs, so other workers
            # skip it; the task's writes and the next due time commit together.
            async with self._sessionmaker() as session, session.begin():
                seen = await session.scalar(
                    select(JobSchedule.next_run_at)
                    .where(JobSchedule.name == periodic.name, JobSchedule.next_run_at <= func.now())
                    .with_for_update(skip_locked=True)
                )
                if seen is None:
                    return 0
                await periodic.task(session)
                await session.execute(
                    update(JobSchedule)
                    .where(JobSchedule.name == periodic.name)
                    .values(
                        next_run_at=func.now() + periodic.every,
                        last_run_at=func.now(),
                        last_error=None,
                    )
                )
        except Exception as exc:
            if seen is None:
                raise
            logger.error("periodic task failed", exc_info=exc, extra=log)
            # Not retried at once: a task that keeps failing would otherwise run on
            # every poll. Conditional, in case another worker has run it since.
            async with self._sessionmaker() as session, session.begin():
                await session.execute(
                    update(JobSchedule)
                    .where(JobSchedule.name == periodic.name, JobSchedule.next_run_at == seen)
                    .values(
                        next_run_at=func.now() + periodic.every,
                        last_error="".join(traceback.format_exception(exc))[-_ERROR_CHARS:],
                    )
                )
        return 1
