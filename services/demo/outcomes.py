"""What officers do around the demo's trade: thresholds, incomes, rulings, exits, monitoring.

All of it through the services an admin's or officer's request goes through. Exits
follow from the ledger: households that were exit-eligible last year (per the
household-year rows) are moved through `exit_proposed` to `exited` with their
reasons in the status history; this year's rows then show some of them flagged for
monitoring, and the officer has already moved a few of those to `monitored`.
"""

from __future__ import annotations

import random
import uuid
from datetime import date, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.assessment.households import HouseholdYear, household_year_sql
from services.assessment.models import Threshold
from services.assessment.scope import Scope, scope_of
from services.assessment.thresholds import Figures, put_thresholds, thresholds_for
from services.demo import data
from services.demo.people import DemoHousehold
from services.demo.trade import Calendar
from services.households import service as households
from services.households.models import HouseholdStatus, IncomeKind
from services.ledger import flags
from services.ledger.models import AttributionFlag, FlagRule, FlagStatus
from services.users.models import User

EXIT_SHARE = 0.7  # of last year's exit-eligible households, those that exited
MONITORED = 2  # exited households the officer has moved to monitoring already
SETBACK = 0.12  # households whose migrant wages this year fell away
UNVERIFIED = 3  # canteen flags the officer has not come to yet


async def write_thresholds(
    session: AsyncSession, admin: User, calendar: Calendar
) -> tuple[list[int], dict[int, Threshold]]:
    """Demo lines for each demo year that has none (an admin's figures are never replaced).

    Answers the years written and each year's thresholds in force.
    """
    written = []
    for year in calendar.years:
        if await session.get(Threshold, year) is None:
            poverty, monitoring = data.DEMO_LINES[calendar.this_year - year]
            figures = Figures(
                poverty_line_yuan=poverty,
                monitoring_line_yuan=monitoring,
                source=data.THRESHOLD_SOURCE,
            )
            await put_thresholds(session, admin, year, figures)
            written.append(year)
    return written, {year: await thresholds_for(session, year) for year in calendar.years}


async def record_incomes(
    session: AsyncSession,
    rng: random.Random,
    officer: User,
    cards: list[tuple[uuid.UUID, DemoHousehold]],
    *,
    calendar: Calendar,
    today: date,
) -> int:
    """This year's other income, recorded at the mid-year visit for the households whose
    last year is on file: about the same, except where migrant work fell away."""
    last, this = calendar.years
    recorded = 0
    for household_id, card in cards:
        incomes = [i for i in card.incomes if i.year == last]
        setback = rng.random() < SETBACK
        for income in incomes:
            factor = rng.uniform(0.85, 1.2)
            note = income.note
            if income.kind is IncomeKind.wage and setback:
                factor, note = rng.uniform(0.2, 0.4), "外出务工（因病返乡，仅上半年）"
            await households.add_income(
                session,
                officer,
                household_id,
                households.NewIncome(this, income.kind, round(income.amount_fen * factor), note),
                today=today,
            )
            recorded += 1
    return recorded


async def rule_on_flags(
    session: AsyncSession,
    officer: User,
    canteens: set[uuid.UUID],
    *,
    rank: dict[uuid.UUID, int],
    now: datetime,
) -> int:
    """The officer has verified most canteens' contracts: their dominant-buyer flags count.

    The last few of them, and every other rule's flags, still wait in the queue.
    """
    waiting: list[AttributionFlag] = []
    cursor = None
    while True:
        page = await flags.list_flags(
            session,
            officer,
            status=FlagStatus.open,
            rule=FlagRule.dominant_buyer,
            limit=200,
            cursor=cursor,
        )
        waiting += [flag for flag in page.items if flag.buyer_id in canteens]
        cursor = page.next_cursor
        if cursor is None:
            break
    # Flags are written together at load: year and household order them the same every run.
    waiting.sort(key=lambda f: (f.year, rank[f.household_id] if f.household_id else -1))
    verified = waiting[: max(0, len(waiting) - UNVERIFIED)]
    for flag in verified:
        await flags.rule(
            session,
            officer,
            flag.id,
            ruling=FlagStatus.counted,
            reason="832平台单位食堂采购，采购合同和付款凭证已核实，属正常销售。",
            now=now,
        )
    return len(verified)


async def household_years(session: AsyncSession, scope: Scope, year: int) -> list[HouseholdYear]:
    threshold = await thresholds_for(session, year)
    stmt = household_year_sql(scope, year, threshold)
    return [HouseholdYear(**row._mapping) for row in await session.execute(stmt)]


async def exits(
    session: AsyncSession,
    rng: random.Random,
    officer: User,
    *,
    calendar: Calendar,
    rank: dict[uuid.UUID, int],
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Exit most of last year's eligible households; move a few that slid since to monitoring.

    `rank` orders households as the demo created them, so the choice is the same on every
    run (their ids are random). Answers the exited and the monitored households.
    """
    last, this = calendar.years
    scope = await scope_of(session, officer, data.COUNTY[0])
    eligible = sorted(
        (
            row
            for row in await household_years(session, scope, last)
            if row.poor and row.status == HouseholdStatus.registered.value and row.exit_eligible
        ),
        key=lambda row: rank[row.household_id],
    )
    chosen = sorted(
        rng.sample(eligible, k=round(len(eligible) * EXIT_SHARE)),
        key=lambda row: rank[row.household_id],
    )
    for row in chosen:
        per_capita = (row.per_capita_fen or 0) // 100
        await households.change_status(
            session,
            officer,
            row.household_id,
            HouseholdStatus.exit_proposed,
            f"{last}年人均纯收入{per_capita}元，高于当年标准{row.poverty_line_fen // 100}元，"
            "两不愁三保障均达标；村民主评议通过，拟退出并公示。",
            workflow=True,
        )
        await households.change_status(
            session,
            officer,
            row.household_id,
            HouseholdStatus.exited,
            "公示7天无异议，乡镇审核、县级审定同意退出。",
            workflow=True,
        )
    exited = {row.household_id for row in chosen}
    slid = sorted(
        (
            row
            for row in await household_years(session, scope, this)
            if row.household_id in exited and row.monitoring
        ),
        key=lambda row: rank[row.household_id],
    )
    # A few are moved already; the rest wait for the officer, flagged in this year's rows.
    monitored = [row.household_id for row in slid[: min(MONITORED, len(slid) // 2)]]
    for row in slid[: len(monitored)]:
        reasons = "、".join(
            {"under_monitoring_line": "人均收入低于监测线", "income_drop": "收入较上年大幅下降"}[r]
            for r in row.monitoring_reasons
        )
        await households.change_status(
            session,
            officer,
            row.household_id,
            HouseholdStatus.monitored,
            f"{this}年动态监测：{reasons}，纳入防止返贫监测对象。",
        )
    return [row.household_id for row in chosen], monitored
