"""Enqueue background jobs in the caller's transaction, and purge finished ones.

This module is the area's front door: handlers import `registry`, `Retry` and
`enqueue` from here; the delivery layer imports `Worker` and `load_handlers`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Exists, delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.jobs.models import DEFAULT_MAX_ATTEMPTS, UNFINISHED, Job
from services.jobs.registry import JobRegistry, Retry, load_handlers, registry
from services.jobs.worker import Worker

__all__ = [
    "JobRegistry",
    "Retry",
    "Worker",
    "enqueue",
    "load_handlers",
    "purge_finished",
    "registry",
    "unfinished",
]


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    *,
    run_at: datetime | None = None,
    dedupe_key: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> int | None:
    """Add a job in the caller's transaction; return its id, or None when deduplicated.

    The job becomes visible to workers when, and only if, the caller commits: the
    business change and the work it implies are recorded together (a
    transactional outbox). `payload` must be plain JSON (ids as strings). With a
    `dedupe_key`, a job of the same kind and key that is still pending or running
    makes this a no-op; once that one has finished or failed, a new one is added.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if run_at is not None and run_at.tzinfo is None:
        raise ValueError("run_at must be timezone-aware")
    stmt = insert(Job).values(
        kind=kind,
        payload=payload,
        dedupe_key=dedupe_key,
        max_attempts=max_attempts,
        # The database clock, like every other time the queue compares.
        run_at=run_at if run_at is not None else func.now(),
    )
    if dedupe_key is not None:
        stmt = stmt.on_conflict_do_nothing(
            index_elements=[Job.kind, Job.dedupe_key], index_where=UNFINISHED
        )
    result = await session.execute(stmt.returning(Job.id))
    return result.scalar_one_or_none()


def _unfinished(kind: str, dedupe_key: ColumnElement[str] | str) -> list[ColumnElement[bool]]:
    return [
        Job.kind == kind,
        Job.dedupe_key == dedupe_key,
        Job.finished_at.is_(None),
        Job.failed_at.is_(None),
    ]


def unfinished(kind: str, dedupe_key: ColumnElement[str]) -> Exists:
    """SQL: a job of `kind` with this key is pending or running (not finished, not failed).

    A condition for set-based queries of other areas, `dedupe_key` usually a column
    of their own table; it walks the unique index of unfinished keys.
    """
    return exists().where(*_unfinished(kind, dedupe_key))


async def on_last_attempt(session: AsyncSession, kind: str, dedupe_key: str) -> bool:
    """Whether the queue will not run this unfinished job again if it fails now.

    Asked by a handler of its own job (whose row the worker holds locked in the
    handler's transaction). No unfinished job of that kind and key (work run by
    hand): true, a failure is final.
    """
    row = (
        await session.execute(
            select(Job.attempts, Job.max_attempts).where(*_unfinished(kind, dedupe_key))
        )
    ).first()
    return row is None or row.attempts >= row.max_attempts


async def purge_finished(session: AsyncSession, older_than: timedelta) -> int:
    """Delete jobs that finished more than `older_than` ago; failed jobs are kept."""
    result = await session.execute(
        delete(Job)
        .where(Job.finished_at < func.now() - older_than)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount
