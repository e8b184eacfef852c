"""Thresholds by year: read by officers, written by admins, every write kept as an edit."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.assessment.models import Threshold, ThresholdEdit
from services.errors import Invalid, NotFound
from services.ledger.service import assessment_year
from services.users import access
from services.users.models import Role, User

YEARS = (2000, 2100)


@dataclass(frozen=True, slots=True)
class Figures:
    """What an admin writes for a year; the defaults are the national rules."""

    poverty_line_yuan: int
    monitoring_line_yuan: int
    income_drop_bp: int = 3_000
    exit_incidence_bp: int = 200
    western_exit_incidence_bp: int = 300
    taobao_sales_yuan: int = 10_000_000
    taobao_active_stores: int = 100
    taobao_store_share_bp: int = 1_000
    source: str | None = None

    def __post_init__(self) -> None:
        if self.poverty_line_yuan <= 0:
            raise Invalid("The poverty line must be positive.", field="poverty_line_yuan")
        if self.monitoring_line_yuan < self.poverty_line_yuan:
            raise Invalid(
                "The monitoring line cannot lie below the poverty line.",
                field="monitoring_line_yuan",
            )
        if not 1 <= self.income_drop_bp <= 10_000:
            raise Invalid("A share lies in 1..10000 basis points.", field="income_drop_bp")
        for name in ("exit_incidence_bp", "western_exit_incidence_bp", "taobao_store_share_bp"):
            if not 0 <= getattr(self, name) <= 10_000:
                raise Invalid("A share lies in 0..10000 basis points.", field=name)
        for name in ("taobao_sales_yuan", "taobao_active_stores"):
            if getattr(self, name) < 0:
                raise Invalid("This figure cannot be negative.", field=name)


FIGURES = tuple(f.name for f in fields(Figures))


def _check_year(year: int) -> None:
    if not YEARS[0] <= year <= YEARS[1]:
        raise Invalid("The year is out of range.", field="year")


def ensure_begun(year: int, now: datetime) -> None:
    """Refuse a year that has not begun (China's calendar): nothing can be assessed in it."""
    if year > assessment_year(now):
        raise Invalid(f"The year {year} has not begun.", field="year")


def _figures_of(row: Threshold) -> dict[str, Any]:
    return {name: getattr(row, name) for name in FIGURES}


async def thresholds_for(session: AsyncSession, year: int) -> Threshold:
    """The thresholds of a year; NotFound (naming the year) when an admin has set none."""
    _check_year(year)
    row = await session.get(Threshold, year)
    if row is None:
        raise NotFound(
            f"No thresholds are set for {year}; an admin sets them with "
            f"PUT /v1/assessment/thresholds/{year}.",
            field="year",
        )
    return row


async def read_thresholds(session: AsyncSession, actor: User, year: int) -> Threshold:
    access.ensure_role(actor, Role.admin, Role.officer)
    return await thresholds_for(session, year)


async def put_thresholds(
    session: AsyncSession, actor: User, year: int, figures: Figures
) -> tuple[Threshold, bool]:
    """Create or replace a year's thresholds; answer the row and whether it is new."""
    access.ensure_role(actor, Role.admin)
    _check_year(year)
    # Locked as read: two admins writing at once leave one after the other in the history.
    row = await session.get(Threshold, year, with_for_update=True, populate_existing=True)
    before = None if row is None else _figures_of(row)
    after = asdict(figures)
    if row is None:
        row = Threshold(year=year, **after)
        session.add(row)
    elif before == after:
        return row, False  # nothing changes: no edit to record
    else:
        for name, value in after.items():
            setattr(row, name, value)
    row.updated_by = actor.id
    row.updated_at = datetime.now(UTC)
    session.add(ThresholdEdit(year=year, before=before, after=after, edited_by=actor.id))
    await session.flush()
    return row, before is None


async def threshold_history(session: AsyncSession, actor: User, year: int) -> list[ThresholdEdit]:
    access.ensure_role(actor, Role.admin, Role.officer)
    _check_year(year)
    stmt = select(ThresholdEdit).where(ThresholdEdit.year == year).order_by(ThresholdEdit.id)
    return list((await session.scalars(stmt)).all())
