"""The export job, and the process configuration it runs with.

Handlers receive only a session and a payload, so where files go and the
pseudonym key are process configuration: the delivery layer (API process or
`marketplace worker`) sets them once at start with `use_config`. A process
without it leaves export jobs waiting rather than writing them somewhere else.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.exports.runner import ExportConfig, run_export
from services.exports.service import EXPORT_JOB
from services.jobs.registry import Retry, registry

NOT_CONFIGURED_RETRY = timedelta(minutes=1)

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
