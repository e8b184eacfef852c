"""What the platform owes each cooperative: one payout per recognised fulfilment.

A payout is written by the recognition statement itself (`_RECOGNISE` in
services.ledger.service), for the fulfilment's net revenue at recognition: what
its lines earned after the platform fee and any refund made before delivery. Its
state is the SQL function `ledger_payout_state` (migration 0014):
- `held` when a dispute holds the order's settlement;
- `pending` when the order was paid through Stripe and the cooperative has a
  connected account: the job `settlements.transfer` then makes a Stripe Transfer
  (separate charges and transfers) and the payout becomes `transferred`, or
  `failed` when Stripe refuses it;
- `payable` otherwise: cash on delivery (the platform collected nothing through
  Stripe; the cash is settled between courier, site and cooperative outside
  Stripe), a cooperative without a connected account (paid by hand), or nothing
  left to pay (a fulfilment refunded in full before delivery: amount 0).

The amount never changes once written, so every retry of the transfer sends the
same parameters under its idempotency key `transfer:{payout id}`. A refund after
recognition therefore does not shrink the transfer: the settlement report shows
it as "refunded after settlement", to be taken back from the cooperative by hand
(reversing a Stripe transfer is not done here). A dispute won (`charge.dispute.closed`)
releases the order's held payouts to the state they would have had (`release_held`);
a dispute lost leaves them held and records the money as returned to the buyer.

The follower that asks for the transfers of pending payouts, the job handler and
the periodic task register when this module is imported: services.ledger.jobs
imports it, and every process loads the handlers.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

import services.ledger.service as ledger
from services.errors import NotFound
from services.jobs.registry import registry
from services.jobs.service import enqueue
from services.ledger.models import EntryKind, LedgerEntry, Payout, PayoutState, Recognition
from services.orders.models import Fulfilment, Order
from services.payments.jobs import _require_gateway
from services.payments.stripe import ProviderRejected, StripeGateway

logger = logging.getLogger(__name__)

TRANSFER_JOB = "settlements.transfer"
# A Stripe outage outlasts the default eight attempts (about 20 minutes of back-off);
# twenty reach about half a day, and the hourly sweep below picks up anything after.
TRANSFER_ATTEMPTS = 20
RESUME_AFTER = timedelta(hours=1)
# Payouts whose money has gone to the cooperative, or will at the recorded amount.
SETTLED = (PayoutState.payable, PayoutState.pending, PayoutState.transferred)


def transfer_key(payout_id: uuid.UUID) -> str:
    return f"transfer:{payout_id}"


def transfer_group(order_id: uuid.UUID) -> str:
    """Stripe's label tying an order's charge and its transfers together."""
    return f"order:{order_id}"


# --- payouts -------------------------------------------------------------------------


@dataclass(slots=True)
class _Due:
    fulfilment_id: uuid.UUID
    order_id: uuid.UUID
    cooperative_id: uuid.UUID
    county_code: str
    currency: str
    amount_fen: int = 0


@ledger.on_recognised
async def request_transfers(
    session: AsyncSession, recognised: list[ledger.RecognisedLine], now: datetime
) -> None:
    """Transfer jobs for the payouts that the recognition wrote as pending."""
    for payout_id in sorted({r.pending_payout for r in recognised if r.pending_payout}):
        await request_transfer(session, payout_id)


# One statement for a batch's payouts: the state follows from the order's hold and
# payment method and the cooperative's connected account, as the module docstring says.
_WRITE_PAYOUTS = text(
    """
WITH written AS (
    INSERT INTO payouts (id, fulfilment_id, order_id, cooperative_id, county_code, amount_fen,
                         currency, state, destination)
    SELECT gen_random_uuid(), d.fulfilment_id, d.order_id, d.cooperative_id, d.county_code,
           d.amount_fen, d.currency,
           ledger_payout_state(x.settlement_hold, x.payment_method, x.stripe_account_id,
                               d.amount_fen),
           CASE WHEN x.payment_method = 'stripe' THEN x.stripe_account_id END
    FROM unnest(CAST(:fulfilment_ids AS uuid[]), CAST(:order_ids AS uuid[]),
                CAST(:cooperative_ids AS uuid[]), CAST(:county_codes AS char(12)[]),
                CAST(:amounts AS bigint[]), CAST(:currencies AS char(3)[]))
             AS d(fulfilment_id, order_id, cooperative_id, county_code, amount_fen, currency)
    -- OFFSET 0: an index probe per payout, never a scan of all orders.
    CROSS JOIN LATERAL (
        SELECT o.settlement_hold, o.payment_method, c.stripe_account_id
        FROM orders o, cooperatives c
        WHERE o.id = d.order_id AND c.id = d.cooperative_id
        OFFSET 0
    ) x
    ORDER BY d.fulfilment_id
    ON CONFLICT (fulfilment_id) DO NOTHING
    RETURNING id, state
)
SELECT count(*) AS written,
       coalesce(array_agg(id ORDER BY id) FILTER (WHERE state = 'pending'), '{}') AS pending
FROM written
"""
)


async def _write_payouts(session: AsyncSession, due: list[_Due]) -> int:
    if not due:
        return 0
    written, pending = (
        await session.execute(
            _WRITE_PAYOUTS,
            {
                "fulfilment_ids": [d.fulfilment_id for d in due],
                "order_ids": [d.order_id for d in due],
                "cooperative_ids": [d.cooperative_id for d in due],
                "county_codes": [d.county_code for d in due],
                "amounts": [d.amount_fen for d in due],
                "currencies": [d.currency for d in due],
            },
        )
    ).one()
    for payout_id in pending:
        await request_transfer(session, payout_id)
    return int(written)


# A won dispute: the order's held payouts take the state they would have had without it.
_RELEASE = text(
    """
UPDATE payouts p
   SET state = ledger_payout_state(false, o.payment_method, c.stripe_account_id, p.amount_fen),
       updated_at = now()
  FROM orders o, cooperatives c
 WHERE p.order_id = :order_id AND p.state = 'held'
   AND o.id = p.order_id AND c.id = p.cooperative_id
RETURNING p.id, p.state
"""
)


async def release_held(session: AsyncSession, order_id: uuid.UUID) -> int:
    """Release an order's held payouts (its dispute was won); the caller holds the order.

    Pending ones get their transfer job. Answers how many were released.
    """
    released = (await session.execute(_RELEASE, {"order_id": order_id})).all()
    for payout_id, state in sorted(released):
        if state == PayoutState.pending.value:
            await request_transfer(session, payout_id)
    return len(released)


async def request_transfer(session: AsyncSession, payout_id: uuid.UUID) -> None:
    await enqueue(
        session,
        TRANSFER_JOB,
        {"payout_id": str(payout_id)},
        dedupe_key=str(payout_id),
        max_attempts=TRANSFER_ATTEMPTS,
    )


async def backfill_payouts(session: AsyncSession, *, limit: int = 1_000) -> int:
    """Payouts for recognised fulfilments that have none (recognised by a process that
    did not load this module); the amount is what their recognition entries hold."""
    rows = (
        await session.execute(
            select(
                Recognition.fulfilment_id,
                Recognition.order_id,
                Fulfilment.cooperative_id,
                Fulfilment.county_code,
                Order.currency,
                func.coalesce(
                    select(func.sum(LedgerEntry.amount_fen))
                    .where(
                        LedgerEntry.fulfilment_id == Recognition.fulfilment_id,
                        LedgerEntry.kind == EntryKind.recognition,
                    )
                    .scalar_subquery(),
                    0,
                ),
            )
            .join(Fulfilment, Fulfilment.id == Recognition.fulfilment_id)
            .join(Order, Order.id == Recognition.order_id)
            .where(~exists().where(Payout.fulfilment_id == Recognition.fulfilment_id))
            .order_by(Recognition.fulfilment_id)
            .limit(limit)
        )
    ).all()
    return await _write_payouts(
        session,
        [
            _Due(fulfilment_id, order_id, cooperative_id, county, currency, int(amount))
            for fulfilment_id, order_id, cooperative_id, county, currency, amount in rows
        ],
    )


async def execute_transfer(
    session: AsyncSession, gateway: StripeGateway, payout_id: uuid.UUID
) -> Payout:
    """Make the Stripe Transfer of a pending payout, once (key `transfer:{id}`).

    A dispute that arrived after the payout was written holds it instead. Stripe
    refusing (4xx) fails the payout with its reason; Stripe unreachable raises
    ProviderError, and the job tries again with the same key and parameters.
    A dispute that arrives while Stripe is answering does not stop the transfer:
    the order's lock is not held across the call, so that buyers and webhooks
    never wait on Stripe.
    """
    payout = (
        await session.scalars(
            select(Payout)
            .where(Payout.id == payout_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if payout is None:
        raise NotFound("No such payout.")
    if payout.state is not PayoutState.pending:
        return payout
    hold = await session.scalar(select(Order.settlement_hold).where(Order.id == payout.order_id))
    if hold:
        payout.state = PayoutState.held
        await session.flush()
        return payout
    if not payout.destination:
        payout.state = PayoutState.failed
        payout.last_error = "no connected account to transfer to"
        await session.flush()
        return payout
    try:
        result = await gateway.create_transfer(
            amount=payout.amount_fen,
            currency=payout.currency,
            destination=payout.destination,
            transfer_group=transfer_group(payout.order_id),
            metadata={
                "payout_id": str(payout.id),
                "fulfilment_id": str(payout.fulfilment_id),
                "order_id": str(payout.order_id),
            },
            idempotency_key=transfer_key(payout.id),
        )
    except ProviderRejected as exc:
        logger.warning(
            "transfer rejected by Stripe", extra={"payout_id": str(payout.id), "error": str(exc)}
        )
        payout.state = PayoutState.failed
        payout.last_error = str(exc)
        await session.flush()
        return payout
    payout.state = PayoutState.transferred
    payout.provider_transfer_id = result.id
    payout.last_error = None
    await session.flush()
    return payout


@registry.handler(TRANSFER_JOB)
async def transfer_payout(session: AsyncSession, payload: dict[str, Any]) -> None:
    await execute_transfer(session, _require_gateway(), uuid.UUID(payload["payout_id"]))


@registry.periodic("settlements.resume_transfers", every=timedelta(hours=1))
async def resume_transfers(session: AsyncSession) -> None:
    """Pending payouts whose job gave up (a long Stripe outage) get a new one."""
    stale = (
        await session.scalars(
            select(Payout.id)
            .where(
                Payout.state == PayoutState.pending,
                Payout.updated_at < func.now() - RESUME_AFTER,
            )
            .order_by(Payout.updated_at)
            .limit(500)
        )
    ).all()
    for payout_id in stale:
        await request_transfer(session, payout_id)  # a job still under way makes this a no-op
