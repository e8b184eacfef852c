"""The jobs area's own periodic task: keep the queue table small."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.jobs.registry import registry
from services.jobs.service import purge_finished

KEEP_FINISHED = timedelta(days=7)


@registry.periodic("jobs.purge_finished", every=timedelta(hours=1))
async def purge_finished_jobs(session: AsyncSession) -> None:
    await purge_finished(session, older_than=KEEP_FINISHED)
