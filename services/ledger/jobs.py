"""Background work of the ledger: the outbox job of a delivery, and the backlog sweep."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.jobs.registry import registry

# Imported for what they register: the flag rules and the payouts follow every
# recognition, so every process that recognises income must know them.
from services.ledger import flag_rules, payouts  # noqa: F401
from services.ledger import service as ledger
from services.orders.service import RECOGNITION_JOB

logger = logging.getLogger(__name__)


@registry.handler(RECOGNITION_JOB)
async def recognise_fulfilment(session: AsyncSession, payload: dict[str, Any]) -> None:
    """A delivery's (or a cash collection's) job: its fulfilment, and other due ones with it."""
    await ledger.recognise_delivered(
        session, uuid.UUID(payload["fulfilment_id"]), now=datetime.now(UTC)
    )


@registry.periodic("ledger.recognise_backlog", every=timedelta(minutes=1))
async def recognise_backlog(session: AsyncSession) -> None:
    """Catches any delivered, paid fulfilment the outbox did not bring (one batch a minute)."""
    lines = await ledger.recognise_due(session, now=datetime.now(UTC))
    if lines:
        logger.info("ledger backlog recognised", extra={"lines": lines})
