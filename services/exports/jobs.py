"""The export job and its sweep, and the process configuration they run with.

Handlers receive only a session and a payload, so where files go and the
pseudonym key are process configuration: the delivery layer (API process or
`marketplace worker`) sets them once at start with `use_config`. A process
without it leaves export jobs waiting rather than writing them somewhere else.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Text, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.exports.models import Export, ExportStatus
from services.exports.runner import ExportConfig, run_export, work_folder
from services.exports.service import EXPORT_JOB
from services.jobs.registry import Retry, registry
from services.jobs.service import unfinished

logger = logging.getLogger(__name__)

NOT_CONFIGURED_RETRY = timedelta(minutes=1)
REAP_BATCH = 100  # exports ended per sweep; more wait for the next one
ABANDONED = (
    "The export's job ended without writing the file (its worker stopped during the last "
    "attempt, or the job no longer exists); ask for the export again."
)

_config: ExportConfig | None = None


def use_config(config: ExportConfig | None) -> None:
    global _config
    _config = config


def _require_config() -> ExportConfig:
    if _config is None:
        raise Retry(NOT_CONFIGURED_RETRY, "exports are not configured in this process")
    return _config


@registry.handler(EXPORT_JOB)
async def run(session: AsyncSession, payload: dict[str, Any]) -> None:
    await run_export(session, _require_config(), uuid.UUID(payload["export_id"]))


@registry.periodic("exports.reap", every=timedelta(minutes=5))
async def reap_abandoned(session: AsyncSession) -> None:
    """Ends exports that no job will run again, and throws away their half-written files.

    A worker killed during an export's last attempt leaves the job `failed_at`
    without the handler running again, so the export would show `queued` or
    `running` for ever. Only an export without a pending or running job is
    touched: a failed job is never run again, and while a handler runs, its
    job is unfinished.
    """
    config = _config
    if config is None:
        # Like the job: the folders are this configuration's; a configured worker sweeps.
        logger.warning("exports are not configured in this process; not reaping")
        return
    abandoned = (
        select(Export.id)
        .where(
            Export.status.in_([ExportStatus.queued, ExportStatus.running]),
            ~unfinished(EXPORT_JOB, cast(Export.id, Text)),
        )
        .order_by(Export.created_at)
        .limit(REAP_BATCH)
        # A row someone is writing right now (progress) is left for the next sweep.
        .with_for_update(skip_locked=True)
    )
    reaped = (
        await session.scalars(
            update(Export)
            .where(Export.id.in_(abandoned))
            .values(status=ExportStatus.failed, error=ABANDONED, finished_at=func.now())
            .returning(Export.id)
            .execution_options(synchronize_session=False)
        )
    ).all()
    if not reaped:
        return

    def remove() -> None:
        # Named by the export's id only, and rmtree never follows a symbolic link:
        # nothing outside that export's own work folder goes.
        for export_id in reaped:
            shutil.rmtree(work_folder(config, export_id), ignore_errors=True)

    await asyncio.to_thread(remove)
    logger.warning(
        "abandoned exports marked failed",
        extra={"exports": [str(export_id) for export_id in reaped]},
    )
