"""The job queue and the schedule of periodic tasks, both plain tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base

DEFAULT_MAX_ATTEMPTS = 8

# A job is pending (or running) until it is either finished or failed for good.
# Both partial indexes below cover exactly those rows, so they stay small however
# many finished jobs are kept.
UNFINISHED = text("finished_at IS NULL AND failed_at IS NULL")


class Job(Base):
    """One unit of background work; finished and failed rows are kept for inspection."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        CheckConstraint("max_attempts > 0", name="max_attempts_positive"),
        # What the claim query walks: the due jobs, oldest first.
        Index("ix_jobs_due", "run_at", postgresql_where=UNFINISHED),
        # Enqueueing a job whose twin is still pending does nothing (ON CONFLICT).
        Index(
            "uq_jobs_kind_dedupe_key",
            "kind",
            "dedupe_key",
            unique=True,
            postgresql_where=UNFINISHED,
        ),
        # What the purge deletes.
        Index(
            "ix_jobs_finished_at", "finished_at", postgresql_where=text("finished_at IS NOT NULL")
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    dedupe_key: Mapped[str | None] = mapped_column(Text)
    run_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Counted when a worker claims the job, so that a worker killed mid-job still
    # uses one up; a Retry gives it back.
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default=str(DEFAULT_MAX_ATTEMPTS))
    locked_by: Mapped[str | None] = mapped_column(Text)
    locked_until: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class JobSchedule(Base):
    """When each periodic task is next due; the row lock makes one worker run it."""

    __tablename__ = "job_schedules"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    next_run_at: Mapped[datetime]
    last_run_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
