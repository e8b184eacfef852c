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

import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar

from sqlalchemy import DateTime, and_, bindparam, func, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession

from services import money
from services.db import DriverStatement, driver_connection
from services.errors import NotFound
from services.ledger import totals
from services.ledger.models import EntryKind, LedgerEntry, Recognition
from services.orders.models import (
    Fulfilment,
    FulfilmentStatus,
    Order,
    OrderLine,
    PaymentMethod,
    PaymentStatus,
)

logger = logging.getLogger(__name__)

# Assessment years follow the calendar in China (UTC+8 all year, no daylight time).
CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")
COOPERATIVE = None  # the party that is not a household: the selling cooperative


def assessment_year(at: datetime) -> int:
    # `_RECOGNISE` says the same in SQL: extract(year FROM at AT TIME ZONE '+08:00').
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


class LineFigures(Protocol):
    """What the split needs of an order line (an entity or a row of `_LINES`)."""

    gross_fen: int
    fee_fen: int
    refunded_fen: int
    shares: list[dict[str, Any]]


def shares_of(line: LineFigures) -> list[Share]:
    return [(uuid.UUID(str(s["household_id"])), int(s["basis_points"])) for s in line.shares]


def target(line: LineFigures | Any) -> dict[uuid.UUID | None, int]:
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
    # The households with a part, in id order: from `parts` unless given (SQL sorts them).
    households: tuple[uuid.UUID, ...] = ()
    # The payout of the line's fulfilment, written by the recognition, when it waits
    # for a Stripe transfer (services.ledger.payouts asks for it).
    pending_payout: uuid.UUID | None = None

    def __post_init__(self) -> None:
        if not self.households:
            households = sorted(p for p, amount in self.parts.items() if p is not None and amount)
            object.__setattr__(self, "households", tuple(households))


# Called in the recognising transaction with everything recognised in it: the flag
# rules and the payouts register here (see `on_recognised`), so that this module
# does not depend on them and they all commit, or fail, together.
Follower = Callable[[AsyncSession, list[RecognisedLine], datetime], Awaitable[None]]
_followers: list[Follower] = []
_unlocked_followers: list[Follower] = []


def on_recognised(follower: Follower) -> Follower:
    """Run `follower` after the lines were added to the households' running totals, under
    the households' locks (services.ledger.totals), which last until the commit."""
    return _register(_followers, follower)


def on_recognised_unlocked(follower: Follower) -> Follower:
    """Run `follower` before the households' totals and locks: for work that reads neither.

    A backlog batch locks nearly every household bucket, so a concurrent batch waits
    from the moment it needs them to this one's commit; what runs before the locks
    overlaps with the other batch instead.
    """
    return _register(_unlocked_followers, follower)


# Called in the transaction of a refund's adjustment entries, after they were added to the
# households' running totals (under the households' locks), with the (household, year)
# pairs whose totals changed: the anomaly rules judge those years again.
Adjusted = Callable[[AsyncSession, set[tuple[uuid.UUID, int]], datetime], Awaitable[None]]
_adjusted_followers: list[Adjusted] = []


def on_adjusted(follower: Adjusted) -> Adjusted:
    """Run `follower` after a resync's entries were added to the households' totals."""
    return _register(_adjusted_followers, follower)


_F = TypeVar("_F")


def _register(followers: list[_F], follower: _F) -> _F:
    if follower not in followers:  # registering again changes nothing
        followers.append(follower)
    return follower


def _rows(
    line: Any,
    order: Any,
    fulfilment_id: uuid.UUID,
    parts: Parts,
    *,
    kind: EntryKind,
    at: datetime,
    refund_id: uuid.UUID | None,
) -> list[tuple[Any, ...]]:
    """Entry rows in `ENTRY_COLUMNS` order; `line` and `order` may be rows or entities."""
    year = assessment_year(at)
    return [
        (
            line.id,
            line.order_id,
            fulfilment_id,
            line.product_id,
            line.cooperative_id,
            line.county_code,
            order.buyer_id,
            party,
            kind.value,
            amount,
            order.currency,
            year,
            at,
            refund_id,
        )
        for party, amount in sorted(parts.items(), key=lambda p: (p[0] is None, str(p[0])))
        if amount
    ]


ENTRY_COLUMNS = (
    "line_id",
    "order_id",
    "fulfilment_id",
    "product_id",
    "cooperative_id",
    "county_code",
    "buyer_id",
    "household_id",
    "kind",
    "amount_fen",
    "currency",
    "year",
    "effective_at",
    "refund_id",
)


async def _insert(session: AsyncSession, rows: list[tuple[Any, ...]]) -> None:
    """Append entries with COPY on the session's own connection (same transaction).

    A backlog writes millions of entries; COPY takes them at a fraction of the cost
    of INSERT statements. The append-only trigger does not stand in its way: it
    refuses updates and deletes, not new rows.
    """
    if not rows:
        return
    driver = await driver_connection(session)
    await driver.copy_records_to_table(
        LedgerEntry.__tablename__, records=rows, columns=ENTRY_COLUMNS
    )


def recognition_time(order: Any, fulfilment: Any) -> datetime:
    """Income is earned at delivery; cash on delivery, when the cash is collected.

    Takes entities or rows with payment_method, paid_at, delivered_at and updated_at.
    `_RECOGNISE` computes the same in SQL for the fulfilments it recognises.
    """
    delivered: datetime = fulfilment.delivered_at or fulfilment.updated_at
    if order.payment_method == PaymentMethod.cod and order.paid_at is not None:
        paid: datetime = order.paid_at
        return max(paid, delivered)
    return delivered


# Delivered, paid and not yet in the ledger: what recognition takes (the partial index
# of fulfilments still due finds them). `_RECOGNISE` checks the same conditions again
# under the orders' locks.
_PAID = (Order.payment_status != PaymentStatus.unpaid, Order.paid_at.is_not(None))
# The predicate of that partial index (ix_fulfilments_unrecognised).
_UNRECOGNISED = (
    Fulfilment.status == FulfilmentStatus.delivered,
    Fulfilment.recognised_at.is_(None),
)
_DUE = (
    select(Fulfilment.id).join(Order, Order.id == Fulfilment.order_id).where(*_UNRECOGNISED, *_PAID)
)

_LINES = select(
    OrderLine.id,
    OrderLine.order_id,
    OrderLine.fulfilment_id,
    OrderLine.product_id,
    OrderLine.cooperative_id,
    OrderLine.county_code,
    OrderLine.gross_fen,
    OrderLine.fee_fen,
    OrderLine.refunded_fen,
    OrderLine.shares,
)


# Recognition of a batch in one statement: claim the fulfilments (the primary key of
# ledger_recognitions is the exactly-once guard), take them out of the partial index
# of what is due, split each line's net revenue and append the entries; answer one
# row per line for what follows (flag rules, payouts). `net_after()` and `split()` are
# in SQL too, as the functions `ledger_net` and `ledger_split` (migration 0010; the
# latter over `ledger_split_lines`, which splits a batch at once, since 0015); property
# tests hold them equal, since refunds and the audit use the Python ones.
_RECOGNISE = text(
    """
WITH due AS (
    -- LATERAL … OFFSET 0 (here and below): one index probe per fulfilment, never a scan of
    -- the whole table, whatever the planner guesses about the size of the batch.
    SELECT x.*
    FROM unnest(CAST(:fulfilment_ids AS uuid[])) AS u(id)
    CROSS JOIN LATERAL (
        SELECT f.id AS fulfilment_id, o.id AS order_id, o.buyer_id, o.currency, f.county_code,
               f.cooperative_id, o.settlement_hold, o.payment_method,
               CASE WHEN o.payment_method = 'cod'
                    THEN greatest(o.paid_at, coalesce(f.delivered_at, f.updated_at))
                    ELSE coalesce(f.delivered_at, f.updated_at) END AS at
        FROM fulfilments f
        JOIN orders o ON o.id = f.order_id
        WHERE f.id = u.id
          AND f.status = 'delivered' AND f.recognised_at IS NULL
          AND o.payment_status <> 'unpaid' AND o.paid_at IS NOT NULL
        OFFSET 0
    ) x
),
claimed AS (
    INSERT INTO ledger_recognitions (fulfilment_id, order_id, county_code, recognised_at, lines)
    SELECT d.fulfilment_id, d.order_id, d.county_code, d.at,
           (SELECT count(*) FROM order_lines l WHERE l.fulfilment_id = d.fulfilment_id)
    FROM due d
    ON CONFLICT DO NOTHING
    RETURNING fulfilment_id
),
marked AS (
    UPDATE fulfilments f SET recognised_at = :now
    WHERE f.id IN (SELECT c.fulfilment_id FROM claimed c)
),
lines AS (
    SELECT l.id, l.order_id, l.fulfilment_id, l.product_id, l.cooperative_id, l.county_code,
           l.position, l.shares, d.buyer_id, d.currency, d.at,
           extract(year FROM d.at AT TIME ZONE INTERVAL '+08:00')::smallint AS year,
           ledger_net(l.gross_fen, l.fee_fen, l.refunded_fen) AS net
    FROM claimed c
    JOIN due d ON d.fulfilment_id = c.fulfilment_id
    CROSS JOIN LATERAL (
        SELECT * FROM order_lines l WHERE l.fulfilment_id = c.fulfilment_id OFFSET 0
    ) l
),
parts AS (
    -- The whole batch split in one pass (ledger_split_lines, migration 0015).
    SELECT s.line_id AS id, s.household_id, s.amount_fen AS amount
    FROM (SELECT array_agg(l.id) AS ids, array_agg(l.net) AS nets, array_agg(l.shares) AS shares
          FROM lines l) a
    CROSS JOIN LATERAL ledger_split_lines(a.ids, a.nets, a.shares) s
),
payouts AS (
    -- What the cooperative is owed for each fulfilment: its lines' net revenue (see
    -- services.ledger.payouts for the states).
    INSERT INTO payouts (id, fulfilment_id, order_id, cooperative_id, county_code, amount_fen,
                         currency, state, destination)
    SELECT gen_random_uuid(), d.fulfilment_id, d.order_id, d.cooperative_id, d.county_code,
           t.amount, d.currency,
           ledger_payout_state(d.settlement_hold, d.payment_method, c.stripe_account_id, t.amount),
           CASE WHEN d.payment_method = 'stripe' THEN c.stripe_account_id END
    FROM (SELECT l.fulfilment_id, sum(l.net)::bigint AS amount
          FROM lines l GROUP BY l.fulfilment_id) t
    JOIN due d ON d.fulfilment_id = t.fulfilment_id
    JOIN cooperatives c ON c.id = d.cooperative_id
    ON CONFLICT (fulfilment_id) DO NOTHING
    RETURNING id, fulfilment_id, state
),
entries AS (
    INSERT INTO ledger_entries (line_id, order_id, fulfilment_id, product_id, cooperative_id,
                                county_code, buyer_id, household_id, kind, amount_fen,
                                currency, year, effective_at)
    SELECT l.id, l.order_id, l.fulfilment_id, l.product_id, l.cooperative_id, l.county_code,
           l.buyer_id, p.household_id, 'recognition', p.amount, l.currency, l.year, l.at
    FROM parts p JOIN lines l ON l.id = p.id
    WHERE p.amount > 0
)
SELECT l.id AS line_id, l.order_id, l.fulfilment_id, l.product_id, l.cooperative_id,
       l.county_code, l.buyer_id, l.currency, l.at AS effective_at, l.year, l.net AS net_fen,
       coalesce(array_agg(p.household_id ORDER BY p.household_id)
                    FILTER (WHERE p.household_id IS NOT NULL AND p.amount > 0), '{}')
           AS households,
       coalesce(array_agg(p.amount ORDER BY p.household_id)
                    FILTER (WHERE p.household_id IS NOT NULL AND p.amount > 0), '{}')
           AS amounts,
       coalesce(sum(p.amount) FILTER (WHERE p.household_id IS NULL), 0) AS cooperative_fen,
       w.id AS pending_payout
FROM lines l
LEFT JOIN parts p ON p.id = l.id
LEFT JOIN payouts w ON w.fulfilment_id = l.fulfilment_id AND w.state = 'pending'
GROUP BY l.id, l.order_id, l.fulfilment_id, l.product_id, l.cooperative_id, l.county_code,
         l.buyer_id, l.currency, l.at, l.year, l.net, l.position, w.id
ORDER BY l.fulfilment_id, l.position
"""
).bindparams(
    bindparam("now", type_=DateTime(timezone=True)),
)


# The same statement as the driver takes it ($1, $2, ...), with its parameters' order.
_RECOGNISE_FOR_DRIVER = DriverStatement(_RECOGNISE)


async def _recognise(
    session: AsyncSession, fulfilment_ids: Sequence[uuid.UUID], *, now: datetime
) -> int:
    """Recognise these fulfilments if delivered, paid and not yet recognised; the caller
    holds their orders' locks. Answers lines recognised."""
    if not fulfilment_ids:
        return 0
    # Straight through asyncpg on the session's connection (same transaction): a backlog
    # batch answers tens of thousands of rows, and SQLAlchemy's result processing of them
    # cost more than building the lines.
    driver = await driver_connection(session)
    # The estimates over jsonb_to_recordset are rough: JIT compiling for them costs more
    # than the statement saves, and the sorts of a large batch should stay in memory.
    await driver.execute(
        "SELECT set_config('jit', 'off', true), set_config('work_mem', '64MB', true)"
    )
    params = {"fulfilment_ids": list(fulfilment_ids), "now": now}
    rows = await driver.fetch(_RECOGNISE_FOR_DRIVER.sql, *_RECOGNISE_FOR_DRIVER.args(params))
    recognised = [
        RecognisedLine(
            line_id=row["line_id"],
            order_id=row["order_id"],
            fulfilment_id=row["fulfilment_id"],
            product_id=row["product_id"],
            cooperative_id=row["cooperative_id"],
            county_code=row["county_code"],
            buyer_id=row["buyer_id"],
            currency=row["currency"],
            effective_at=row["effective_at"],
            year=row["year"],
            net_fen=row["net_fen"],
            parts=_parts(row["households"], row["amounts"], row["cooperative_fen"]),
            households=tuple(row["households"]),
            pending_payout=row["pending_payout"],
        )
        for row in rows
    ]
    for follower in _unlocked_followers:
        await follower(session, recognised, now)
    await totals.add(
        session,
        totals.additions(
            (household, line.year, line.buyer_id, line.parts[household])
            for line in recognised
            for household in line.households
        ),
    )
    for follower in _followers:
        await follower(session, recognised, now)
    return len(recognised)


def _parts(households: Sequence[uuid.UUID], amounts: Sequence[int], cooperative_fen: int) -> Parts:
    parts: Parts = dict(zip(households, amounts, strict=True))
    if cooperative_fen:
        parts[COOPERATIVE] = cooperative_fen
    return parts


# Other due fulfilments the outbox job of one delivery takes along (`recognise_delivered`).
DELIVERY_SWEEP = 200


async def recognise_delivered(
    session: AsyncSession, fulfilment_id: uuid.UUID, *, now: datetime, sweep: int = DELIVERY_SWEEP
) -> int:
    """The outbox job of a delivery: recognise this fulfilment if it is delivered, paid and
    not yet recognised and, in the same pass, up to `sweep` other delivered, paid
    fulfilments still due whose orders nobody holds (`sweep=0`: this one alone).

    Deliveries come in bursts, each with its job. One recognition per job repeats the
    fixed work of a pass (the flag rules' reads, the households' locks and totals, the
    payouts) for a line or two; the first job of a burst recognises the burst at once,
    and the jobs of the fulfilments it took find them recognised and stop there (a
    fulfilment's `recognised_at`, set in the transaction that recognises it, is never
    cleared). Answers the lines recognised, this fulfilment's and the others' (0: not
    due, or done already); running it twice changes nothing.
    """
    # This fulfilment's order is waited for: its lock orders the recognition against
    # refunds of its lines and against the collection of its cash.
    found = (
        await session.execute(
            select(and_(*_UNRECOGNISED, *_PAID).label("due"))
            .join_from(Fulfilment, Order, Order.id == Fulfilment.order_id)
            .where(Fulfilment.id == fulfilment_id)
            .with_for_update(of=Order)
        )
    ).one_or_none()
    if found is None:
        raise NotFound("No such fulfilment.")
    if not found.due:
        # Done already; or not due: cash on delivery not collected yet (a job queued by a
        # delivery before migration 0025, which queues none until the order is paid; the
        # collection queues its own). Nothing to do, and no sweep: a sweep costs a scan.
        return 0
    # The others' orders are taken only when free (SKIP LOCKED), so that the sweep never
    # waits and cannot deadlock: a fulfilment whose order is busy stays due for its own job.
    others = await _take_recent(session, sweep, besides=fulfilment_id) if sweep else []
    if others:
        # A fulfilment of the sweep that cannot be recognised (bad data, a rule failing
        # on it) must not hold up the delivery this job is for: the pass runs in a
        # savepoint, and on failure this fulfilment is recognised alone, as before the
        # sweep; the other keeps failing in its own job, where it is reported.
        try:
            async with session.begin_nested():
                return await _recognise(session, [fulfilment_id, *others], now=now)
        except Exception:
            logger.warning(
                "recognising a delivery with the other due fulfilments failed; alone instead",
                exc_info=True,
                extra={"fulfilment_id": str(fulfilment_id), "others": len(others)},
            )
    return await _recognise(session, [fulfilment_id], now=now)


async def recognise_due(session: AsyncSession, *, now: datetime, limit: int = 2_000) -> int:
    """Recognise up to `limit` delivered, paid fulfilments still missing from the ledger.

    The safety net behind the outbox, and the way a backlog is worked off: set-based,
    with SKIP LOCKED so that several workers share the backlog. Answers lines recognised.
    """
    return await _recognise(session, await _take_due(session, limit), now=now)


async def _take_due(session: AsyncSession, limit: int) -> Sequence[uuid.UUID]:
    """Up to `limit` due fulfilments, oldest delivery first, their orders locked; orders
    another transaction holds are skipped, never waited for."""
    return (
        await session.scalars(
            _DUE.order_by(Fulfilment.delivered_at, Fulfilment.id)
            .limit(limit)
            .with_for_update(of=Order, skip_locked=True)
        )
    ).all()


# How many of the latest unrecognised deliveries a delivery job's sweep looks at, for
# its `sweep` due ones: delivered parcels whose cash is not collected yet are not due
# and may be many; the sweep must not read them all, job after job.
SWEEP_LOOKS_AT = 4


async def _take_recent(
    session: AsyncSession, limit: int, *, besides: uuid.UUID
) -> Sequence[uuid.UUID]:
    """Up to `limit` due fulfilments among the `SWEEP_LOOKS_AT` x `limit` latest delivered
    and unrecognised, their orders locked, skipping orders another transaction holds.

    Latest first: the deliveries of the burst the sweeping job belongs to, whose own
    jobs are queued behind it. An older backlog is `recognise_due`'s.
    """
    latest = (
        select(Fulfilment.id, Fulfilment.order_id)
        .where(*_UNRECOGNISED, Fulfilment.id != besides)
        .order_by(Fulfilment.delivered_at.desc(), Fulfilment.id.desc())
        .limit(SWEEP_LOOKS_AT * limit)
        .subquery()
    )
    # Each order looked up (and locked) by its key, in the window's order: a plain join
    # let the planner start from the orders when it believed few were paid (a scan of
    # them all, 23 ms on the tracking benchmark's 20,000).
    paid = (
        select(Order.id)
        .where(Order.id == latest.c.order_id, *_PAID)
        .with_for_update(skip_locked=True)
        .lateral()
    )
    return (await session.scalars(select(latest.c.id).join(paid, true()).limit(limit))).all()


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
        await session.execute(
            select(Order.buyer_id, Order.currency).where(Order.id == order_id).with_for_update()
        )
    ).one()
    lines = (
        await session.execute(
            _LINES.join(Recognition, Recognition.fulfilment_id == OrderLine.fulfilment_id)
            .where(OrderLine.order_id == order_id)
            .order_by(OrderLine.position)
        )
    ).all()
    if not lines:
        return 0
    held = await holdings(session, [line.id for line in lines])
    rows: list[tuple[Any, ...]] = []
    for line in lines:
        diff = adjustments(target(line), held.get(line.id, {}))
        rows += _rows(
            line,
            order,
            line.fulfilment_id,
            diff,
            kind=EntryKind.adjustment,
            at=at,
            refund_id=refund_id,
        )
    await _insert(session, rows)
    # In ENTRY_COLUMNS order: household 7, year 11, buyer 6, amount 9.
    added = totals.additions((r[7], r[11], r[6], r[9]) for r in rows)
    await totals.add(session, added)
    if added:
        changed = {(household, year) for household, year, _ in added}
        for follower in _adjusted_followers:
            await follower(session, changed, at)
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
