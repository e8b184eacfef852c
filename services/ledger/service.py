"""Recognising income: each delivered line's net revenue, split to the fen, kept in sync.

What the ledger should hold for a line is a pure function of the line (gross,
fee, what has been refunded) and its share snapshot: `target()`. Recognition
writes that target once the fulfilment is delivered and paid; a refund, or a
refund that failed and gives the money back to the line, writes the difference
between the new target and what the ledger already holds, dated that day. So
every party's sum is always exactly its part of the line's current net revenue,
never below zero, and it does not matter in which order deliveries and refunds
arrive. `marketplace ledger-audit` recomputes the same targets and compares.

Recognition and refunds both hold the order's row lock, so neither can miss the
other. Recognition is exactly once per fulfilment by the primary key of
`ledger_recognitions`, written in the same transaction as the entries.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services import money
from services.errors import NotFound
from services.ledger.models import EntryKind, LedgerEntry, Recognition
from services.orders.models import (
    Fulfilment,
    FulfilmentStatus,
    Order,
    OrderLine,
    PaymentMethod,
    PaymentStatus,
)

# Assessment years follow the calendar in China (UTC+8 all year, no daylight time).
CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")
COOPERATIVE = None  # the party that is not a household: the selling cooperative


def assessment_year(at: datetime) -> int:
    return at.astimezone(CHINA).year


def net_after(gross: int, fee: int, refunded: int) -> int:
    """A line's net revenue once `refunded` fen of its gross went back to the buyer.

    The platform gives back its fee in proportion (rounded so that the fee kept
    never exceeds the fee charged), so a full refund leaves nothing to anyone.
    """
    if not 0 <= refunded <= gross or not 0 <= fee <= gross:
        raise ValueError("refunded and fee must lie within the gross amount")
    kept = gross - refunded
    fee_kept = fee * kept // gross if gross else 0
    return kept - fee_kept


Share = tuple[uuid.UUID, int]  # (household_id, basis points)


def split(net: int, shares: Sequence[Share]) -> dict[uuid.UUID | None, int]:
    """Split a net amount between the households of a snapshot and the cooperative (the rest).

    Largest remainder on integer fen. Ties go to households before the
    cooperative, and between households to the smaller id, so the same line
    always splits the same way. Parties with nothing are left out.
    """
    ordered = sorted(shares, key=lambda s: str(s[0]))
    weights = [bp for _, bp in ordered]
    rest = 10_000 - sum(weights)
    if rest < 0:
        raise ValueError("shares exceed 10000 basis points")
    parts = money.allocate(net, [*weights, rest])
    out: dict[uuid.UUID | None, int] = {}
    for (household_id, _), amount in zip(ordered, parts, strict=False):
        if amount:
            out[household_id] = out.get(household_id, 0) + amount
    if parts[-1]:
        out[COOPERATIVE] = parts[-1]
    return out


def shares_of(line: OrderLine) -> list[Share]:
    return [(uuid.UUID(str(s["household_id"])), int(s["basis_points"])) for s in line.shares]


def target(line: OrderLine) -> dict[uuid.UUID | None, int]:
    """What the ledger should hold for a recognised line, party by party."""
    return split(net_after(line.gross_fen, line.fee_fen, line.refunded_fen), shares_of(line))


Parts = dict[uuid.UUID | None, int]


def adjustments(want: Parts, have: Parts) -> Parts:
    """The entries that bring what the ledger holds for a line to what it should hold."""
    diff = {party: want.get(party, 0) - have.get(party, 0) for party in set(want) | set(have)}
    return {party: amount for party, amount in diff.items() if amount}


@dataclass(frozen=True, slots=True)
class RecognisedLine:
    """A line as it entered the ledger: for the flag rules and the payouts that follow."""

    line_id: uuid.UUID
    order_id: uuid.UUID
    fulfilment_id: uuid.UUID
    product_id: uuid.UUID
    cooperative_id: uuid.UUID
    county_code: str
    buyer_id: uuid.UUID
    currency: str
    effective_at: datetime
    year: int
    net_fen: int
    parts: dict[uuid.UUID | None, int]


# Called in the recognising transaction with everything recognised in it: the flag
# rules and the payouts register here (see `on_recognised`), so that this module
# does not depend on them and they all commit, or fail, together.
Follower = Callable[[AsyncSession, list[RecognisedLine], datetime], Awaitable[None]]
_followers: list[Follower] = []


def on_recognised(follower: Follower) -> Follower:
    if follower not in _followers:
        _followers.append(follower)
    return follower


def _rows(
    line: OrderLine,
    order: Order,
    fulfilment: Fulfilment,
    parts: dict[uuid.UUID | None, int],
    *,
    kind: EntryKind,
    at: datetime,
    refund_id: uuid.UUID | None,
) -> list[dict[str, Any]]:
    year = assessment_year(at)
    return [
        {
            "line_id": line.id,
            "order_id": line.order_id,
            "fulfilment_id": fulfilment.id,
            "product_id": line.product_id,
            "cooperative_id": line.cooperative_id,
            "county_code": line.county_code,
            "buyer_id": order.buyer_id,
            "household_id": party,
            "kind": kind,
            "amount_fen": amount,
            "currency": order.currency,
            "year": year,
            "effective_at": at,
            "refund_id": refund_id,
        }
        for party, amount in sorted(parts.items(), key=lambda p: (p[0] is None, str(p[0])))
        if amount
    ]


async def _insert(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(LedgerEntry), rows)


def recognition_time(order: Order, fulfilment: Fulfilment) -> datetime:
    """Income is earned at delivery; cash on delivery, when the cash is collected."""
    delivered = fulfilment.delivered_at or fulfilment.updated_at
    if order.payment_method is PaymentMethod.cod and order.paid_at is not None:
        return max(order.paid_at, delivered)
    return delivered


def _eligible(order: Order, fulfilment: Fulfilment) -> bool:
    return (
        fulfilment.status is FulfilmentStatus.delivered
        and order.payment_status is not PaymentStatus.unpaid
        and order.paid_at is not None
    )


async def _lines_of(
    session: AsyncSession, fulfilment_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[OrderLine]]:
    by_fulfilment: dict[uuid.UUID, list[OrderLine]] = defaultdict(list)
    for line in (
        await session.scalars(
            select(OrderLine)
            .where(OrderLine.fulfilment_id.in_(list(fulfilment_ids)))
            .order_by(OrderLine.fulfilment_id, OrderLine.position)
            .execution_options(populate_existing=True)
        )
    ).all():
        by_fulfilment[line.fulfilment_id].append(line)
    return by_fulfilment


async def _recognise(
    session: AsyncSession, pairs: list[tuple[Order, Fulfilment]], *, now: datetime
) -> int:
    """Write the entries of these delivered, paid fulfilments; the caller holds their orders."""
    if not pairs:
        return 0
    claimed = set(
        (
            await session.scalars(
                insert(Recognition)
                .values(
                    [
                        {
                            "fulfilment_id": f.id,
                            "order_id": o.id,
                            "county_code": f.county_code,
                            "recognised_at": recognition_time(o, f),
                            "lines": 0,
                        }
                        for o, f in pairs
                    ]
                )
                .on_conflict_do_nothing()
                .returning(Recognition.fulfilment_id)
            )
        ).all()
    )
    pairs = [(o, f) for o, f in pairs if f.id in claimed]
    lines = await _lines_of(session, (f.id for _, f in pairs))
    rows: list[dict[str, Any]] = []
    recognised: list[RecognisedLine] = []
    for order, fulfilment in pairs:
        at = recognition_time(order, fulfilment)
        for line in lines.get(fulfilment.id, []):
            parts = target(line)
            rows += _rows(
                line, order, fulfilment, parts, kind=EntryKind.recognition, at=at, refund_id=None
            )
            recognised.append(
                RecognisedLine(
                    line_id=line.id,
                    order_id=order.id,
                    fulfilment_id=fulfilment.id,
                    product_id=line.product_id,
                    cooperative_id=line.cooperative_id,
                    county_code=line.county_code,
                    buyer_id=order.buyer_id,
                    currency=order.currency,
                    effective_at=at,
                    year=assessment_year(at),
                    net_fen=sum(parts.values()),
                    parts=parts,
                )
            )
    await _insert(session, rows)
    counts: dict[uuid.UUID, int] = defaultdict(int)
    for item in recognised:
        counts[item.fulfilment_id] += 1
    for fulfilment_id, count in counts.items():
        row = await session.get(Recognition, fulfilment_id)
        if row is not None:
            row.lines = count
    await session.flush()
    for follower in _followers:
        await follower(session, recognised, now)
    return len(recognised)


async def recognise_fulfilment(
    session: AsyncSession, fulfilment_id: uuid.UUID, *, now: datetime
) -> int:
    """Recognise one fulfilment if it is delivered and paid and not yet recognised.

    Answers how many lines entered the ledger (0: not due, or done already). The
    outbox job of a delivery or a cash collection calls this; running it twice
    changes nothing.
    """
    order_id = await session.scalar(
        select(Fulfilment.order_id).where(Fulfilment.id == fulfilment_id)
    )
    if order_id is None:
        raise NotFound("No such fulfilment.")
    order = (
        await session.scalars(
            select(Order)
            .where(Order.id == order_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one()
    fulfilment = await session.get(Fulfilment, fulfilment_id, populate_existing=True)
    assert fulfilment is not None
    if not _eligible(order, fulfilment):
        return 0
    return await _recognise(session, [(order, fulfilment)], now=now)


async def recognise_due(session: AsyncSession, *, now: datetime, limit: int = 2_000) -> int:
    """Recognise up to `limit` delivered, paid fulfilments still missing from the ledger.

    The safety net behind the outbox, and the way a backlog is worked off: set-based,
    with SKIP LOCKED so that several workers share the backlog. Answers lines recognised.
    """
    rows = (
        await session.execute(
            select(Order, Fulfilment)
            .join(Fulfilment, Fulfilment.order_id == Order.id)
            .where(
                Fulfilment.status == FulfilmentStatus.delivered,
                Order.payment_status != PaymentStatus.unpaid,
                Order.paid_at.is_not(None),
                ~exists().where(Recognition.fulfilment_id == Fulfilment.id),
            )
            .order_by(Fulfilment.delivered_at.nulls_first(), Fulfilment.id)
            .limit(limit)
            .with_for_update(of=Order, skip_locked=True)
            .execution_options(populate_existing=True)
        )
    ).all()
    return await _recognise(session, [(o, f) for o, f in rows], now=now)


async def resync_order(
    session: AsyncSession,
    order_id: uuid.UUID,
    *,
    at: datetime,
    refund_id: uuid.UUID | None = None,
) -> int:
    """After the refunded amounts of an order's lines changed: adjust recognised lines.

    Writes, per party, the difference between the line's new target and what the
    ledger holds, dated `at` (so a refund after recognition is counted in the year
    of the refund). Lines not yet recognised need nothing: recognition will use
    their refunded amount. Answers the number of entries written.
    """
    order = (
        await session.scalars(
            select(Order)
            .where(Order.id == order_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one()
    recognised = (
        (
            await session.execute(
                select(Fulfilment)
                .join(Recognition, Recognition.fulfilment_id == Fulfilment.id)
                .where(Fulfilment.order_id == order_id)
                .execution_options(populate_existing=True)
            )
        )
        .scalars()
        .all()
    )
    if not recognised:
        return 0
    by_id = {f.id: f for f in recognised}
    lines = await _lines_of(session, by_id)
    held = await holdings(session, [line.id for ls in lines.values() for line in ls])
    rows: list[dict[str, Any]] = []
    for fulfilment_id, fulfilment_lines in lines.items():
        for line in fulfilment_lines:
            diff = adjustments(target(line), held.get(line.id, {}))
            rows += _rows(
                line,
                order,
                by_id[fulfilment_id],
                diff,
                kind=EntryKind.adjustment,
                at=at,
                refund_id=refund_id,
            )
    await _insert(session, rows)
    return len(rows)


async def holdings(
    session: AsyncSession, line_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[uuid.UUID | None, int]]:
    """What the ledger holds per line and party."""
    out: dict[uuid.UUID, dict[uuid.UUID | None, int]] = defaultdict(dict)
    if not line_ids:
        return out
    for line_id, party, amount in (
        await session.execute(
            select(LedgerEntry.line_id, LedgerEntry.household_id, func.sum(LedgerEntry.amount_fen))
            .where(LedgerEntry.line_id.in_(list(line_ids)))
            .group_by(LedgerEntry.line_id, LedgerEntry.household_id)
        )
    ).all():
        out[line_id][party] = int(amount)
    return out
