"""The ledger audit: recompute what the ledger should hold and compare, in bounded batches.

What each recognised line should hold is `ledger.target(line)`, a pure function of
the line (gross, fee, refunded) and its share snapshot; what it holds is the sum of
its entries per party (`ledger.holdings`). Beside those, the audit looks for entries
of fulfilments never recognised, entries that do not agree with their line about
the order, fulfilment, product, cooperative, county or buyer, delivered and paid
fulfilments still unrecognised after a grace period, and recognised fulfilments
without a payout.

Lines are read 5,000 at a time by keyset on their id, and the other checks stream
from server-side cursors, so memory does not grow with the ledger. Run it in one
REPEATABLE READ transaction (the CLI does): every batch then sees the same moment,
and a refund landing mid-audit cannot show up as a false difference.
"""

from __future__ import annotations

import enum
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    CompoundSelect,
    Select,
    Uuid,
    and_,
    cast,
    exists,
    func,
    null,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession

import services.ledger.service as ledger
from services.ledger.models import (
    BuyerYear,
    EntryKind,
    HouseholdYear,
    LedgerEntry,
    Payout,
    Recognition,
)
from services.orders.models import (
    Fulfilment,
    FulfilmentStatus,
    Order,
    OrderLine,
    PaymentStatus,
)

BATCH_SIZE = 5_000
GRACE = timedelta(hours=1)


class Problem(enum.StrEnum):
    mismatch = "mismatch"  # a recognised line's party holds other than its target
    missing_entries = "missing_entries"  # a recognised line that should hold money has no entry
    unrecognised_entries = "unrecognised_entries"  # entries of a fulfilment never recognised
    unrecognised = "unrecognised"  # delivered and paid, still not recognised after the grace
    missing_payout = "missing_payout"  # recognised, but no payout was recorded for it
    # An entry whose line does not exist, or that names another order, fulfilment, product,
    # cooperative, county or buyer than its line does (the ledger keeps no foreign keys on
    # what it copies from the line: migration 0010).
    misattributed = "misattributed"
    # A recognition or payout whose fulfilment does not exist, or that names another
    # order (a payout: or cooperative) than its fulfilment does (no foreign keys on
    # either: migration 0014). Figures: the payout's amount, 0 for a recognition.
    misattributed_fulfilment = "misattributed_fulfilment"
    # A household's running total for a year and buyer (services.ledger.totals) that is
    # not the sum of its entries. Figures: the entries' sum (expected), the total (held).
    totals_mismatch = "totals_mismatch"


@dataclass(frozen=True, slots=True)
class Difference:
    """One thing the ledger gets wrong.

    Line problems name the line and the party (a household, or None for the
    cooperative). Fulfilment problems (`unrecognised`, `missing_payout`) have no
    line and no party: their figures are the whole fulfilment's. A total
    (`totals_mismatch`) names no fulfilment: its household (party), year and buyer.
    """

    problem: Problem
    fulfilment_id: uuid.UUID | None
    line_id: uuid.UUID | None
    party: uuid.UUID | None
    expected_fen: int
    held_fen: int
    year: int | None = None
    buyer_id: uuid.UUID | None = None

    @property
    def delta_fen(self) -> int:
        return self.held_fen - self.expected_fen

    @property
    def party_label(self) -> str | None:
        if self.line_id is None:
            return None
        return "cooperative" if self.party is None else str(self.party)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "problem": self.problem.value,
            "fulfilment_id": str(self.fulfilment_id) if self.fulfilment_id else None,
            "line_id": str(self.line_id) if self.line_id else None,
            "party": self.party_label,
            "expected_fen": self.expected_fen,
            "held_fen": self.held_fen,
            "delta_fen": self.delta_fen,
        }
        if self.problem is Problem.totals_mismatch:
            out |= {
                "party": str(self.party),
                "year": self.year,
                "buyer_id": str(self.buyer_id) if self.buyer_id else None,
            }
        return out


class LedgerAudit:
    """One pass over the ledger; read the counters once `differences()` is exhausted."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        now: datetime,
        grace: timedelta = GRACE,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.session = session
        self.now = now
        self.grace = grace
        self.batch_size = batch_size
        self.lines_checked = 0
        self.counts: Counter[Problem] = Counter()

    @property
    def clean(self) -> bool:
        return not self.counts

    async def differences(self) -> AsyncIterator[Difference]:
        for check in (
            self._recognised_lines,
            self._unrecognised_entries,
            self._misattributed_entries,
            self._unrecognised_fulfilments,
            self._missing_payouts,
            self._misattributed_fulfilments,
            self._totals,
        ):
            async for difference in check():
                self.counts[difference.problem] += 1
                yield difference

    async def _stream(
        self, stmt: Select[*tuple[Any, ...]] | CompoundSelect[*tuple[Any, ...]]
    ) -> AsyncIterator[Any]:
        """Rows from a server-side cursor, released however the caller stops reading.

        (With asyncpg the exhausted portal itself lives on until the transaction ends.)
        """
        result = await self.session.stream(stmt.execution_options(yield_per=self.batch_size))
        try:
            async for row in result:
                yield row
        finally:
            await result.close()

    async def _recognised_lines(self) -> AsyncIterator[Difference]:
        after = uuid.UUID(int=0)
        while True:
            lines = (
                await self.session.execute(
                    _LINES.join(Recognition, Recognition.fulfilment_id == OrderLine.fulfilment_id)
                    .where(OrderLine.id > after)
                    .order_by(OrderLine.id)
                    .limit(self.batch_size)
                )
            ).all()
            if not lines:
                return
            held = await ledger.holdings(self.session, [line.id for line in lines])
            for line in lines:
                for difference in compare(line, held.get(line.id, {})):
                    yield difference
            self.lines_checked += len(lines)
            after = lines[-1].id

    async def _unrecognised_entries(self) -> AsyncIterator[Difference]:
        entry = LedgerEntry
        stmt = (
            select(
                entry.fulfilment_id, entry.line_id, entry.household_id, func.sum(entry.amount_fen)
            )
            .where(~exists().where(Recognition.fulfilment_id == entry.fulfilment_id))
            .group_by(entry.fulfilment_id, entry.line_id, entry.household_id)
            .order_by(entry.fulfilment_id, entry.line_id, entry.household_id)
        )
        async for fulfilment_id, line_id, party, amount in self._stream(stmt):
            yield Difference(
                Problem.unrecognised_entries, fulfilment_id, line_id, party, 0, int(amount)
            )

    async def _misattributed_entries(self) -> AsyncIterator[Difference]:
        entry = LedgerEntry
        copied = tuple_(
            entry.order_id,
            entry.fulfilment_id,
            entry.product_id,
            entry.cooperative_id,
            entry.county_code,
            entry.buyer_id,
        )
        source = tuple_(
            OrderLine.order_id,
            OrderLine.fulfilment_id,
            OrderLine.product_id,
            OrderLine.cooperative_id,
            OrderLine.county_code,
            Order.buyer_id,
        )
        stmt = (
            select(entry.fulfilment_id, entry.line_id, entry.household_id, entry.amount_fen)
            .outerjoin(OrderLine, OrderLine.id == entry.line_id)
            .outerjoin(Order, Order.id == OrderLine.order_id)
            .where(or_(OrderLine.id.is_(None), copied.is_distinct_from(source)))
            .order_by(entry.id)
        )
        async for fulfilment_id, line_id, party, amount in self._stream(stmt):
            yield Difference(Problem.misattributed, fulfilment_id, line_id, party, 0, int(amount))

    async def _unrecognised_fulfilments(self) -> AsyncIterator[Difference]:
        # Due since delivery, or since the cash was collected when that came later.
        due_since = func.greatest(
            func.coalesce(Fulfilment.delivered_at, Fulfilment.updated_at), Order.paid_at
        )
        stmt = (
            select(Fulfilment.id, _expected_net())
            .join(Order, Order.id == Fulfilment.order_id)
            .where(
                Fulfilment.status == FulfilmentStatus.delivered,
                Order.payment_status != PaymentStatus.unpaid,
                Order.paid_at.is_not(None),
                ~exists().where(Recognition.fulfilment_id == Fulfilment.id),
                due_since < self.now - self.grace,
            )
            .order_by(Fulfilment.id)
        )
        async for fulfilment_id, expected in self._stream(stmt):
            yield Difference(Problem.unrecognised, fulfilment_id, None, None, int(expected), 0)

    async def _missing_payouts(self) -> AsyncIterator[Difference]:
        recognised = (
            select(func.coalesce(func.sum(LedgerEntry.amount_fen), 0))
            .where(
                LedgerEntry.fulfilment_id == Recognition.fulfilment_id,
                LedgerEntry.kind == EntryKind.recognition,
            )
            .scalar_subquery()
        )
        stmt = (
            select(Recognition.fulfilment_id, recognised)
            .where(~exists().where(Payout.fulfilment_id == Recognition.fulfilment_id))
            .order_by(Recognition.fulfilment_id)
        )
        async for fulfilment_id, expected in self._stream(stmt):
            yield Difference(Problem.missing_payout, fulfilment_id, None, None, int(expected), 0)

    async def _misattributed_fulfilments(self) -> AsyncIterator[Difference]:
        recognitions = (
            select(Recognition.fulfilment_id, cast(0, BigInteger))
            .outerjoin(Fulfilment, Fulfilment.id == Recognition.fulfilment_id)
            .where(or_(Fulfilment.id.is_(None), Fulfilment.order_id != Recognition.order_id))
        )
        payouts = (
            select(Payout.fulfilment_id, Payout.amount_fen)
            .outerjoin(Fulfilment, Fulfilment.id == Payout.fulfilment_id)
            .where(
                or_(
                    Fulfilment.id.is_(None),
                    Fulfilment.order_id != Payout.order_id,
                    Fulfilment.cooperative_id != Payout.cooperative_id,
                )
            )
        )
        stmt = recognitions.union_all(payouts).order_by(text("1"))
        async for fulfilment_id, amount in self._stream(stmt):
            yield Difference(
                Problem.misattributed_fulfilment, fulfilment_id, None, None, 0, int(amount)
            )

    async def _totals(self) -> AsyncIterator[Difference]:
        """Running totals against the sums of the entries, per household, year and buyer.

        Only the per-buyer totals are compared with the entries; each household-year
        total is compared with the sum of its buyers' (a difference there is reported
        with no buyer). Zero and absent are the same.
        """
        async for household_id, year, buyer_id, expected, held in self._stream(_TOTALS):
            yield Difference(
                Problem.totals_mismatch,
                None,
                None,
                household_id,
                int(expected),
                int(held),
                year=year,
                buyer_id=buyer_id,
            )


_SUMS = (
    select(
        LedgerEntry.household_id,
        LedgerEntry.year,
        LedgerEntry.buyer_id,
        func.sum(LedgerEntry.amount_fen).label("amount_fen"),
    )
    .where(LedgerEntry.household_id.is_not(None))
    .group_by(LedgerEntry.household_id, LedgerEntry.year, LedgerEntry.buyer_id)
    .subquery()
)
_BY_BUYER = (
    select(
        func.coalesce(_SUMS.c.household_id, BuyerYear.household_id),
        func.coalesce(_SUMS.c.year, BuyerYear.year),
        func.coalesce(_SUMS.c.buyer_id, BuyerYear.buyer_id),
        func.coalesce(_SUMS.c.amount_fen, 0),
        func.coalesce(BuyerYear.amount_fen, 0),
    )
    .select_from(_SUMS)
    .join(
        BuyerYear,
        and_(
            BuyerYear.household_id == _SUMS.c.household_id,
            BuyerYear.year == _SUMS.c.year,
            BuyerYear.buyer_id == _SUMS.c.buyer_id,
        ),
        full=True,
    )
    .where(func.coalesce(_SUMS.c.amount_fen, 0) != func.coalesce(BuyerYear.amount_fen, 0))
)
_BUYERS = (
    select(
        BuyerYear.household_id,
        BuyerYear.year,
        func.sum(BuyerYear.amount_fen).label("amount_fen"),
    )
    .group_by(BuyerYear.household_id, BuyerYear.year)
    .subquery()
)
_BY_YEAR = (
    select(
        func.coalesce(_BUYERS.c.household_id, HouseholdYear.household_id),
        func.coalesce(_BUYERS.c.year, HouseholdYear.year),
        null().cast(Uuid),
        func.coalesce(_BUYERS.c.amount_fen, 0),
        func.coalesce(HouseholdYear.amount_fen, 0),
    )
    .select_from(_BUYERS)
    .join(
        HouseholdYear,
        and_(
            HouseholdYear.household_id == _BUYERS.c.household_id,
            HouseholdYear.year == _BUYERS.c.year,
        ),
        full=True,
    )
    .where(func.coalesce(_BUYERS.c.amount_fen, 0) != func.coalesce(HouseholdYear.amount_fen, 0))
)
_TOTALS = _BY_BUYER.union_all(_BY_YEAR).order_by(text("1, 2, 3"))


# Plain rows, not entities: nothing accumulates in the session, nothing read is stale.
_LINES = select(
    OrderLine.id,
    OrderLine.fulfilment_id,
    OrderLine.gross_fen,
    OrderLine.fee_fen,
    OrderLine.refunded_fen,
    OrderLine.shares,
)


def compare(line: Any, held: dict[uuid.UUID | None, int]) -> list[Difference]:
    """The differences between what a recognised line should hold and what it holds.

    `line` is an order line, or a row with its id, fulfilment_id and figures.
    """
    want = ledger.target(line)
    if want and not held:
        return [
            Difference(
                Problem.missing_entries, line.fulfilment_id, line.id, None, sum(want.values()), 0
            )
        ]
    return [
        Difference(
            Problem.mismatch,
            line.fulfilment_id,
            line.id,
            party,
            want.get(party, 0),
            held.get(party, 0),
        )
        for party in sorted(set(want) | set(held), key=lambda p: (p is None, str(p)))
        if want.get(party, 0) != held.get(party, 0)
    ]


def _expected_net() -> Any:
    """SQL: the fulfilment's net revenue as `ledger.net_after` computes it, line by line
    (the function `ledger_net`, held equal to it by a property test)."""
    net = func.ledger_net(OrderLine.gross_fen, OrderLine.fee_fen, OrderLine.refunded_fen)
    return (
        select(cast(func.coalesce(func.sum(net), 0), BigInteger))
        .where(OrderLine.fulfilment_id == Fulfilment.id)
        .scalar_subquery()
    )


async def audit(
    session: AsyncSession,
    *,
    now: datetime,
    grace: timedelta = GRACE,
    batch_size: int = BATCH_SIZE,
) -> list[Difference]:
    """Every difference, in a list: for tests and small ledgers (the CLI streams)."""
    run = LedgerAudit(session, now=now, grace=grace, batch_size=batch_size)
    return [difference async for difference in run.differences()]
