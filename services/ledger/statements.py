"""A household's income statement for a year: every ledger entry, and whether it counts.

An entry counts in assessment unless a flag holding that household's part of the
line is open (not yet ruled) or was ruled `excluded`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.households import service as households
from services.ledger.flags import HOLDING, counted
from services.ledger.models import AttributionFlag, FlagLine, LedgerEntry
from services.orders.models import OrderLine
from services.pagination import Page, keyset_page
from services.users.models import User


@dataclass(frozen=True, slots=True)
class FlagMark:
    id: uuid.UUID
    rule: str
    status: str


@dataclass(frozen=True, slots=True)
class StatementLine:
    entry: LedgerEntry
    title: str
    unit: str
    flags: list[FlagMark] = field(default_factory=list)

    @property
    def counted(self) -> bool:
        return not any(f.status in HOLDING for f in self.flags)


@dataclass(frozen=True, slots=True)
class Totals:
    currency: str
    recognised_fen: int
    counted_fen: int

    @property
    def left_out_fen(self) -> int:
        return self.recognised_fen - self.counted_fen


@dataclass(frozen=True, slots=True)
class Statement:
    household_id: uuid.UUID
    year: int
    totals: list[Totals]
    page: Page[StatementLine]


async def household_income(
    session: AsyncSession,
    actor: User,
    household_id: uuid.UUID,
    *,
    year: int,
    limit: int,
    cursor: str | None,
) -> Statement:
    """Officers of the household's county (and admins) read it; others get 404."""
    await households.get_household(session, actor, household_id, audit=False)
    mine = and_(LedgerEntry.household_id == household_id, LedgerEntry.year == year)
    totals = [
        Totals(currency, int(recognised), int(kept))
        for currency, recognised, kept in (
            await session.execute(
                select(
                    LedgerEntry.currency,
                    func.sum(LedgerEntry.amount_fen),
                    func.sum(case((counted(), LedgerEntry.amount_fen), else_=0)),
                )
                .where(mine)
                .group_by(LedgerEntry.currency)
                .order_by(LedgerEntry.currency)
            )
        ).all()
    ]
    page = await keyset_page(
        session,
        select(LedgerEntry).where(mine),
        order=[LedgerEntry.effective_at, LedgerEntry.id],
        kind="income",
        cursor=cursor,
        limit=limit,
    )
    entries: list[LedgerEntry] = page.items
    line_ids = list({e.line_id for e in entries})
    titles = {
        line_id: (title, unit)
        for line_id, title, unit in (
            await session.execute(
                select(OrderLine.id, OrderLine.title, OrderLine.unit).where(
                    OrderLine.id.in_(line_ids)
                )
            )
        ).all()
    }
    marks: dict[uuid.UUID, list[FlagMark]] = defaultdict(list)
    for line_id, flag_id, rule, status in (
        await session.execute(
            select(
                FlagLine.line_id, AttributionFlag.id, AttributionFlag.rule, AttributionFlag.status
            )
            .join(AttributionFlag, AttributionFlag.id == FlagLine.flag_id)
            .where(FlagLine.line_id.in_(line_ids), FlagLine.household_id == household_id)
            .order_by(AttributionFlag.created_at)
        )
    ).all():
        marks[line_id].append(FlagMark(flag_id, rule.value, status.value))
    lines = [
        StatementLine(e, *titles.get(e.line_id, ("", "")), flags=marks.get(e.line_id, []))
        for e in entries
    ]
    return Statement(household_id, year, totals, Page(lines, page.next_cursor))
