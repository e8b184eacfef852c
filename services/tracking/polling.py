"""Asking providers about open parcels, for those that do not push (or missed a push).

A periodic dispatcher (once per tick, cluster-wide) picks the shipments due for a
poll and enqueues one job each, spaced by the provider's rate from that
provider's next free call slot, which is kept in PostgreSQL: however many
workers run, one provider is asked at most `rate` times a second by schedule.
A 429 pauses the whole provider for its Retry-After; a failure or timeout backs
that one parcel off exponentially, with jitter. Delivered, returned and expired
parcels are not polled again.

The providers are process configuration, set once by the delivery layer (API
process or `marketplace worker`) with `use_providers`, like the Stripe gateway.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.jobs.registry import registry
from services.jobs.service import enqueue
from services.jobs.worker import default_backoff
from services.orders.models import Order
from services.tracking import service
from services.tracking.carriers import get_carrier
from services.tracking.models import ACTIVE_STATUSES, ProviderPause, Shipment, Source, TrackingPush
from services.tracking.vocabulary import (
    FINISHED,
    Provider,
    ProviderUnavailable,
    RateLimited,
    TrackingNotFound,
)
from services.users.models import User

logger = logging.getLogger(__name__)

POLL_JOB = "tracking.poll"
DISPATCH_EVERY = timedelta(seconds=30)
# AfterShip retries a failed push for about three days; a month leaves a wide margin.
KEEP_PUSHES = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class PollPolicy:
    interval: timedelta = timedelta(hours=1)  # between two polls of one open parcel
    rate: float = 5.0  # calls per second, per provider
    expire_after: timedelta = timedelta(days=30)  # an open parcel without news is expired


@dataclass(frozen=True)
class Providers:
    """The tracking providers this process may call or hear from, by name."""

    by_name: Mapping[str, Provider] = field(default_factory=dict)
    policy: PollPolicy = PollPolicy()

    def get(self, name: str) -> Provider | None:
        return self.by_name.get(name)

    def pollable(self) -> list[Provider]:
        return [p for p in self.by_name.values() if p.can_poll]

    def first_poll(self, provider: Source, now: datetime) -> datetime | None:
        """When a new parcel of this provider is first polled; None when it is not."""
        adapter = self.get(provider.value)
        return now if adapter is not None and adapter.can_poll else None


_providers = Providers()


def use_providers(providers: Providers) -> None:
    global _providers
    _providers = providers


def current() -> Providers:
    return _providers


async def _pause_row(session: AsyncSession, provider: Source) -> ProviderPause:
    await session.execute(insert(ProviderPause).values(provider=provider).on_conflict_do_nothing())
    row = (
        await session.scalars(
            select(ProviderPause)
            .where(ProviderPause.provider == provider)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one()
    return row


async def dispatch(session: AsyncSession, providers: Providers, *, now: datetime) -> int:
    """Enqueue the polls that are due, within each provider's rate; answer how many."""
    total = 0
    for adapter in providers.pollable():
        provider = Source(adapter.name)
        pause = await _pause_row(session, provider)
        if pause.paused_until is not None and pause.paused_until > now:
            continue
        rate = providers.policy.rate
        budget = max(1, int(rate * DISPATCH_EVERY.total_seconds()))
        due = list(
            (
                await session.scalars(
                    select(Shipment.id)
                    .where(
                        Shipment.provider == provider,
                        Shipment.next_poll_at <= now,
                        Shipment.status.in_(ACTIVE_STATUSES),
                    )
                    .order_by(Shipment.next_poll_at)
                    .limit(budget)
                    .with_for_update(skip_locked=True)
                )
            ).all()
        )
        if not due:
            continue
        slot = max(now, pause.next_slot_at or now)
        spacing = timedelta(seconds=1 / rate)
        for i, shipment_id in enumerate(due):
            await enqueue(
                session,
                POLL_JOB,
                {"shipment_id": str(shipment_id)},
                run_at=slot + i * spacing,
                dedupe_key=str(shipment_id),
            )
        pause.next_slot_at = slot + len(due) * spacing
        await session.flush()
        # A lease: the job sets the real next time once it has asked.
        await session.execute(
            update(Shipment)
            .where(Shipment.id.in_(due))
            .values(next_poll_at=now + providers.policy.interval)
        )
        total += len(due)
    return total


async def poll_one(
    session: AsyncSession,
    providers: Providers,
    shipment_id: uuid.UUID,
    *,
    client: httpx.AsyncClient,
    now: datetime,
) -> str:
    """Ask the provider about one parcel and apply the answer; answer what happened.

    The provider is called without holding any lock: the answer is applied like a
    webhook push, under the shipment's lock, so a push of the same events at the
    same moment makes no second row.
    """
    shipment = await session.get(Shipment, shipment_id)
    if shipment is None or shipment.status in FINISHED:
        return "finished"
    adapter = providers.get(shipment.provider.value)
    if adapter is None or not adapter.can_poll:
        await _set_next_poll(session, shipment_id, None)
        return "not-pollable"
    pause = await session.get(ProviderPause, shipment.provider)
    if pause is not None and pause.paused_until is not None and pause.paused_until > now:
        await _set_next_poll(session, shipment_id, pause.paused_until)
        return "provider-paused"
    try:
        reported = await adapter.poll(
            client,
            shipment.carrier,
            shipment.tracking_number,
            # Read only for the carriers whose queries ask for it (personal data).
            phone=(
                await _recipient_phone(session, shipment.order_id)
                if get_carrier(shipment.carrier).query_needs_phone
                else None
            ),
        )
    except RateLimited as exc:
        until = now + exc.retry_after
        row = await _pause_row(session, shipment.provider)
        row.paused_until = max(until, row.paused_until or until)
        await session.flush()
        await _set_next_poll(session, shipment_id, until)
        logger.info("tracking provider rate limited", extra={"provider": adapter.name})
        return "rate-limited"
    except ProviderUnavailable as exc:
        failures = shipment.poll_failures + 1
        await session.execute(
            update(Shipment)
            .where(Shipment.id == shipment_id)
            .values(poll_failures=failures, next_poll_at=now + default_backoff(failures))
        )
        logger.info(
            "tracking provider unavailable",
            extra={"provider": adapter.name, "error": str(exc), "failures": failures},
        )
        return "provider-unavailable"
    except TrackingNotFound:
        await _set_next_poll(session, shipment_id, now + providers.policy.interval)
        return "not-found"
    await service.receive_update(session, reported, now=now, shipment_id=shipment_id)
    locked = await session.get(Shipment, shipment_id, populate_existing=True, with_for_update=True)
    assert locked is not None
    locked.poll_failures = 0
    locked.next_poll_at = (
        None if locked.status in FINISHED or reported.finished else now + providers.policy.interval
    )
    await session.flush()
    return "polled"


async def _recipient_phone(session: AsyncSession, order_id: uuid.UUID) -> str | None:
    """The delivery address's phone, else the buyer's (a pickup order has no address)."""
    row = (
        await session.execute(
            select(Order.delivery_address, User.phone)
            .join(User, User.id == Order.buyer_id)
            .where(Order.id == order_id)
        )
    ).first()
    if row is None:
        return None
    address, account_phone = row
    phone = (address or {}).get("phone")
    return str(phone) if phone else account_phone


async def _set_next_poll(
    session: AsyncSession, shipment_id: uuid.UUID, at: datetime | None
) -> None:
    await session.execute(
        update(Shipment).where(Shipment.id == shipment_id).values(next_poll_at=at)
    )


@registry.periodic("tracking.dispatch_polls", every=DISPATCH_EVERY)
async def dispatch_polls(session: AsyncSession) -> None:
    queued = await dispatch(session, current(), now=datetime.now(UTC))
    if queued:
        logger.info("tracking polls queued", extra={"polls": queued})


@registry.periodic("tracking.expire_silent", every=timedelta(hours=1))
async def expire_silent(session: AsyncSession) -> None:
    """Stop tracking parcels without news for the policy's time (one batch an hour)."""
    expired = await service.expire_silent(
        session, now=datetime.now(UTC), silent_for=current().policy.expire_after
    )
    if expired:
        logger.info("silent parcels expired", extra={"parcels": expired})


@registry.periodic("tracking.purge_pushes", every=timedelta(hours=1))
async def purge_pushes(session: AsyncSession) -> None:
    """Forget webhook deliveries older than any provider's redelivery window."""
    await session.execute(
        delete(TrackingPush).where(TrackingPush.received_at < datetime.now(UTC) - KEEP_PUSHES)
    )


@registry.handler(POLL_JOB)
async def poll_job(session: AsyncSession, payload: dict[str, Any]) -> None:
    async with httpx.AsyncClient() as client:
        await poll_one(
            session,
            current(),
            uuid.UUID(payload["shipment_id"]),
            client=client,
            now=datetime.now(UTC),
        )
