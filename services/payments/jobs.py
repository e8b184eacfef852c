"""Background work of payments and orders: refunds, intent cancellation, reservation expiry.

Handlers receive only a session and a payload, so the Stripe gateway is process
configuration: the delivery layer (API process or `marketplace worker`) sets it
once at start with `use_gateway`. Without Stripe keys those jobs wait.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.idempotency.service import purge_expired
from services.jobs.registry import Retry, registry
from services.jobs.service import enqueue
from services.orders import flows
from services.payments import service as payments
from services.payments.stripe import ProviderRejected, StripeGateway

logger = logging.getLogger(__name__)

_gateway: StripeGateway | None = None
NOT_CONFIGURED_RETRY = timedelta(minutes=10)


def use_gateway(gateway: StripeGateway | None) -> None:
    global _gateway
    _gateway = gateway


def _require_gateway() -> StripeGateway:
    if _gateway is None:
        raise Retry(NOT_CONFIGURED_RETRY, "Stripe is not configured in this process")
    return _gateway


@registry.handler(payments.REFUND_JOB)
async def execute_refund(session: AsyncSession, payload: dict[str, Any]) -> None:
    await payments.execute_refund(session, _require_gateway(), uuid.UUID(payload["refund_id"]))


@registry.handler(payments.CANCEL_INTENT_JOB)
async def cancel_intent(session: AsyncSession, payload: dict[str, Any]) -> None:
    intent_id = str(payload["intent_id"])
    try:
        await _require_gateway().cancel_payment_intent(
            intent_id, idempotency_key=f"cancel:{intent_id}"
        )
    except ProviderRejected as exc:
        # Most often the buyer paid in the meantime: the succeeded event will find
        # the order cancelled and refund the money. Nothing to retry here.
        logger.info("intent not cancellable", extra={"intent_id": intent_id, "error": str(exc)})


@registry.periodic("orders.expire_reservations", every=timedelta(seconds=15))
async def expire_reservations(session: AsyncSession) -> None:
    expired = await flows.expire_due(session, now=datetime.now(UTC), enqueue=enqueue)
    if expired:
        logger.info("reservations expired", extra={"orders": expired})


@registry.periodic("idempotency.purge", every=timedelta(hours=1))
async def purge_idempotency_keys(session: AsyncSession) -> None:
    await purge_expired(session, now=datetime.now(UTC))
