"""The cooperative's settlement report: what it and each member household earned.

The report works in China days (UTC+8, as assessment years do): the net and each
party's part are the ledger entries dated in the period; gross and fees are those of
the lines recognised in the period; refunds are whatever took the net below
gross - fees (before delivery, on this period's lines; after delivery, the
adjustments dated in the period). So net = households + cooperative =
gross - fees - refunds, to the fen. Payouts (payouts.py) are summed by state.
"""

from __future__ import annotations

import calendar
import logging
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

import services.ledger.service as ledger
from services.audit.service import record
from services.cooperatives import service as cooperatives
from services.errors import Invalid
from services.households import service as households
from services.ledger.models import EntryKind, LedgerEntry, Payout, PayoutState, Recognition
from services.ledger.payouts import SETTLED
from services.orders.models import Fulfilment, Order, OrderLine
from services.pagination import Page, decode_cursor, encode_cursor
from services.users import access
from services.users.models import Role, User

logger = logging.getLogger(__name__)


# --- periods -------------------------------------------------------------------------

_MONTH = re.compile(r"^([0-9]{4})-([0-9]{2})$")
FIRST_YEAR, LAST_YEAR = 2000, 2100
# The assessment calendar (ledger.CHINA) in SQL: UTC+8, no daylight time.
_CHINA_SQL: ColumnElement[Any] = literal_column("INTERVAL '+08:00'")


@dataclass(frozen=True, slots=True)
class Period:
    """Calendar days in China time, `first` to `last` inclusive."""

    first: date
    last: date

    @classmethod
    def month(cls, text: str) -> Period:
        match = _MONTH.match(text)
        if match is None or not 1 <= int(match[2]) <= 12:
            raise Invalid("A period is a month written YYYY-MM.", field="period")
        year, month = int(match[1]), int(match[2])
        if not FIRST_YEAR <= year <= LAST_YEAR:
            raise Invalid(f"Months from {FIRST_YEAR} to {LAST_YEAR} only.", field="period")
        return cls(date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1]))

    @classmethod
    def between(cls, first: date, last: date) -> Period:
        for name, day in (("from", first), ("to", last)):
            if not FIRST_YEAR <= day.year <= LAST_YEAR:
                raise Invalid(f"Dates from {FIRST_YEAR} to {LAST_YEAR} only.", field=name)
        if last < first:
            raise Invalid("`to` comes before `from`.", field="to")
        return cls(first, last)

    @property
    def label(self) -> str:
        """`YYYY-MM` for a whole month, else `first/last` (ISO 8601 dates)."""
        month_end = calendar.monthrange(self.first.year, self.first.month)[1]
        if self.first.day == 1 and self.last == self.first.replace(day=month_end):
            return f"{self.first:%Y-%m}"
        return f"{self.first}/{self.last}"

    def bounds(self) -> tuple[datetime, datetime]:
        """[start, end) as instants."""
        start = datetime.combine(self.first, time(), tzinfo=ledger.CHINA)
        end = datetime.combine(self.last + timedelta(days=1), time(), tzinfo=ledger.CHINA)
        return start.astimezone(UTC), end.astimezone(UTC)


def _month_before(year: int, month: int, n: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) - n
    return index // 12, index % 12 + 1


# --- the report ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PayoutSum:
    count: int = 0
    amount_fen: int = 0


@dataclass(slots=True)
class Totals:
    """One currency's figures for the period. Identities, to the fen:
    net = households + cooperative = gross - fees - refunds."""

    currency: str
    fulfilments: int = 0  # recognised (delivered, paid) in the period
    lines: int = 0
    gross_fen: int = 0  # price x quantity of those lines
    fees_fen: int = 0  # platform fee charged on them
    refunds_before_delivery_fen: int = 0  # taken from those lines' net before recognition
    refunds_after_delivery_fen: int = 0  # ledger adjustments dated in the period, any line
    net_fen: int = 0  # every ledger entry dated in the period
    households_fen: int = 0
    cooperative_fen: int = 0
    refunded_after_settlement_fen: int = 0  # <= 0: adjustments on payouts already made
    payouts: dict[PayoutState, PayoutSum] = field(default_factory=dict)

    @property
    def refunds_fen(self) -> int:
        return self.refunds_before_delivery_fen + self.refunds_after_delivery_fen


@dataclass(frozen=True, slots=True)
class HouseholdEarning:
    household_id: uuid.UUID
    head_name: str | None  # current members only, as the member listing shows them
    currency: str
    recognised_fen: int
    adjustments_fen: int

    @property
    def earned_fen(self) -> int:
        return self.recognised_fen + self.adjustments_fen


@dataclass(frozen=True, slots=True)
class Settlement:
    cooperative_id: uuid.UUID
    period: Period
    totals: list[Totals]
    households: list[HouseholdEarning]


async def _ensure_reader(session: AsyncSession, actor: User, cooperative_id: uuid.UUID) -> None:
    """Its managers and admins; a manager of another cooperative gets 403, as elsewhere."""
    access.ensure_role(actor, Role.admin, Role.manager)
    access.ensure_cooperative(actor, cooperative_id)
    await cooperatives.get_cooperative(session, cooperative_id)


def _sum(value: Any) -> Any:
    return func.coalesce(func.sum(value), 0)


def _when(condition: ColumnElement[bool], value: Any) -> Any:
    return _sum(case((condition, value), else_=0))


async def settlement(
    session: AsyncSession, actor: User, cooperative_id: uuid.UUID, *, period: Period
) -> Settlement:
    """Per currency: sales recognised in the period, fees, refunds, net, each party's part,
    payouts by state; and each household's earnings. Reading names is audited."""
    await _ensure_reader(session, actor, cooperative_id)
    start, end = period.bounds()
    totals: dict[str, Totals] = {}

    def of(currency: str) -> Totals:
        return totals.setdefault(currency, Totals(currency))

    entry = LedgerEntry
    in_period = and_(
        entry.cooperative_id == cooperative_id,
        entry.effective_at >= start,
        entry.effective_at < end,
    )
    adjustment = entry.kind == EntryKind.adjustment
    settled = exists().where(Payout.fulfilment_id == entry.fulfilment_id, Payout.state.in_(SETTLED))
    for currency, net, to_households, adjusted, after_settlement in (
        await session.execute(
            select(
                entry.currency,
                _sum(entry.amount_fen),
                _when(entry.household_id.is_not(None), entry.amount_fen),
                _when(adjustment, entry.amount_fen),
                _when(and_(adjustment, settled), entry.amount_fen),
            )
            .where(in_period)
            .group_by(entry.currency)
        )
    ).all():
        t = of(currency)
        t.net_fen, t.households_fen = int(net), int(to_households)
        t.cooperative_fen = t.net_fen - t.households_fen
        t.refunds_after_delivery_fen = -int(adjusted)
        t.refunded_after_settlement_fen = int(after_settlement)

    # The fulfilments recognised in the period, and what their lines held at recognition.
    cohort = and_(
        Fulfilment.cooperative_id == cooperative_id,
        Recognition.recognised_at >= start,
        Recognition.recognised_at < end,
    )
    at_recognition = (
        select(entry.line_id, func.sum(entry.amount_fen).label("net"))
        .where(in_period, entry.kind == EntryKind.recognition)
        .group_by(entry.line_id)
        .subquery()
    )
    for currency, fulfilments, lines, gross, fees, recognised in (
        await session.execute(
            select(
                Order.currency,
                func.count(func.distinct(OrderLine.fulfilment_id)),
                func.count(OrderLine.id),
                _sum(OrderLine.gross_fen),
                _sum(OrderLine.fee_fen),
                _sum(func.coalesce(at_recognition.c.net, 0)),
            )
            .select_from(Recognition)
            .join(Fulfilment, Fulfilment.id == Recognition.fulfilment_id)
            .join(Order, Order.id == Fulfilment.order_id)
            .join(OrderLine, OrderLine.fulfilment_id == Fulfilment.id)
            .outerjoin(at_recognition, at_recognition.c.line_id == OrderLine.id)
            .where(cohort)
            .group_by(Order.currency)
        )
    ).all():
        t = of(currency)
        t.fulfilments, t.lines = int(fulfilments), int(lines)
        t.gross_fen, t.fees_fen = int(gross), int(fees)
        t.refunds_before_delivery_fen = t.gross_fen - t.fees_fen - int(recognised)

    for currency, state, count, amount in (
        await session.execute(
            select(Payout.currency, Payout.state, func.count(), _sum(Payout.amount_fen))
            .join(Recognition, Recognition.fulfilment_id == Payout.fulfilment_id)
            .join(Fulfilment, Fulfilment.id == Payout.fulfilment_id)
            .where(cohort, Payout.cooperative_id == cooperative_id)
            .group_by(Payout.currency, Payout.state)
        )
    ).all():
        of(currency).payouts[state] = PayoutSum(int(count), int(amount))

    earned = _sum(entry.amount_fen)
    rows = (
        await session.execute(
            select(
                entry.household_id,
                entry.currency,
                _when(entry.kind == EntryKind.recognition, entry.amount_fen),
                _when(adjustment, entry.amount_fen),
            )
            .where(in_period, entry.household_id.is_not(None))
            .group_by(entry.household_id, entry.currency)
            .order_by(earned.desc(), entry.household_id, entry.currency)
        )
    ).all()
    names = await _member_names(session, actor, cooperative_id, {r[0] for r in rows}, period)
    return Settlement(
        cooperative_id=cooperative_id,
        period=period,
        totals=[totals[c] for c in sorted(totals)],
        households=[
            HouseholdEarning(household_id, names.get(household_id), currency, int(rec), int(adj))
            for household_id, currency, rec, adj in rows
        ],
    )


async def _member_names(
    session: AsyncSession,
    actor: User,
    cooperative_id: uuid.UUID,
    household_ids: set[uuid.UUID],
    period: Period,
) -> dict[uuid.UUID, str]:
    """Heads of household of the current members, as the member listing shows them."""
    if not household_ids:
        return {}
    members = await cooperatives.current_member_ids(session, cooperative_id, list(household_ids))
    cards = await households.summaries(session, sorted(members))
    await record(
        session,
        actor,
        "cooperative.settlements.read",
        "household",
        [str(h) for h in sorted(cards)],
        cooperative_id=str(cooperative_id),
        period=period.label,
    )
    return {household_id: card.head_name for household_id, card in cards.items()}


# --- months with entries -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MonthTotals:
    currency: str
    recognised_fen: int
    adjustments_fen: int
    households_fen: int

    @property
    def net_fen(self) -> int:
        return self.recognised_fen + self.adjustments_fen

    @property
    def cooperative_fen(self) -> int:
        return self.net_fen - self.households_fen


@dataclass(frozen=True, slots=True)
class SettlementMonth:
    month: str  # YYYY-MM, China time
    totals: list[MonthTotals]


async def settlement_months(
    session: AsyncSession,
    actor: User,
    cooperative_id: uuid.UUID,
    *,
    limit: int = 24,
    cursor: str | None = None,
) -> Page[SettlementMonth]:
    """Months with ledger entries, newest first, a page covering `limit` calendar months.

    Each page scans one window of calendar months through the (cooperative,
    effective_at) index, so a page may hold fewer than `limit` items (months
    without entries are left out) and still have a next one.
    """
    await _ensure_reader(session, actor, cooperative_id)
    mine: ColumnElement[bool] = LedgerEntry.cooperative_id == cooperative_id
    if cursor:
        (before,) = decode_cursor(cursor, "settlement-months", str)
        try:
            upper = Period.month(before).bounds()[0]
        except Invalid as exc:
            raise Invalid("The cursor is not valid.", field="cursor") from exc
        mine = and_(mine, LedgerEntry.effective_at < upper)
    newest = await session.scalar(select(func.max(LedgerEntry.effective_at)).where(mine))
    if newest is None:
        return Page([], None)
    top = newest.astimezone(ledger.CHINA)
    oldest = _month_before(top.year, top.month, limit - 1)
    lower = Period.month(f"{oldest[0]:04d}-{oldest[1]:02d}").bounds()[0]
    month = func.to_char(func.timezone(_CHINA_SQL, LedgerEntry.effective_at), "YYYY-MM")
    by_month: dict[str, list[MonthTotals]] = defaultdict(list)
    for label, currency, recognised, adjusted, to_households in (
        await session.execute(
            select(
                month,
                LedgerEntry.currency,
                _when(LedgerEntry.kind == EntryKind.recognition, LedgerEntry.amount_fen),
                _when(LedgerEntry.kind == EntryKind.adjustment, LedgerEntry.amount_fen),
                _when(LedgerEntry.household_id.is_not(None), LedgerEntry.amount_fen),
            )
            .where(mine, LedgerEntry.effective_at >= lower)
            .group_by(month, LedgerEntry.currency)
            .order_by(month.desc(), LedgerEntry.currency)
        )
    ).all():
        by_month[label].append(
            MonthTotals(currency, int(recognised), int(adjusted), int(to_households))
        )
    older = await session.scalar(select(exists().where(mine, LedgerEntry.effective_at < lower)))
    next_cursor = (
        encode_cursor("settlement-months", [f"{oldest[0]:04d}-{oldest[1]:02d}"]) if older else None
    )
    return Page([SettlementMonth(m, t) for m, t in by_month.items()], next_cursor)
