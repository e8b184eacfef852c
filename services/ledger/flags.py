"""Self-dealing and anomalies (DESIGN rule 6): income held back from assessment until ruled.

`flag_rules` follows every recognition, in its transaction, with four
rules over all the lines recognised there. A flag holds back households' parts of
lines (`attribution_flag_lines`); an entry of the ledger is counted in assessment
unless a flag that is open or excluded holds its line and household: `counted()`.
Officers rule on flags; every ruling is appended to `attribution_rulings` and the
flag shows the latest.
"""

from __future__ import annotations

import calendar
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, any_, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.orm.util import AliasedClass

from services.errors import Invalid, NotFound
from services.ledger.models import (
    AttributionFlag,
    FlagLine,
    FlagRule,
    FlagStatus,
    LedgerEntry,
    Ruling,
)
from services.ledger.service import CHINA
from services.pagination import Page, keyset_page
from services.users import access
from services.users.models import Role, User

Pair = tuple[uuid.UUID, uuid.UUID]  # (line_id, household_id)


# --- policy -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlagPolicy:
    """The thresholds of the anomaly rules; the delivery layer sets them from its settings."""

    dominant_buyer_bp: int = 5_000  # one buyer's part of a household's year above this share
    dominant_buyer_min_fen: int = 100_000  # ... once the year's ledger income reaches this
    assessment_date: tuple[int, int] = (12, 31)  # (month, day) in China
    spike_weeks: int = 4  # the window before the assessment date
    spike_factor: float = 3.0  # window income above factor x the average window before it
    spike_min_fen: int = 50_000  # ... and at least this much

    def __post_init__(self) -> None:
        date(2000, *self.assessment_date)  # a leap year: 02-29 is allowed
        if not 0 < self.dominant_buyer_bp <= 10_000:
            raise ValueError("dominant_buyer_bp must lie in 1..10000")
        if self.spike_weeks < 1 or self.spike_factor <= 0:
            raise ValueError("spike_weeks must be positive, spike_factor above zero")
        if self.dominant_buyer_min_fen < 0 or self.spike_min_fen < 0:
            raise ValueError("minimum amounts must not be negative")

    def window(self, year: int) -> tuple[datetime, datetime]:
        """The spike window of a year: the weeks up to the end of its assessment date."""
        month, day = self.assessment_date
        if (month, day) == (2, 29) and not calendar.isleap(year):
            day = 28
        end = datetime(year, month, day, tzinfo=CHINA) + timedelta(days=1)
        start = end - timedelta(weeks=self.spike_weeks)
        return max(start, datetime(year, 1, 1, tzinfo=CHINA)), end


def parse_assessment_date(value: str) -> tuple[int, int]:
    """'MM-DD' as (month, day); ValueError when it names no day of a (leap) year."""
    match = re.fullmatch(r"([0-9]{2})-([0-9]{2})", value.strip())
    if match is None:
        raise ValueError("the assessment date must be written MM-DD")
    month, day = int(match[1]), int(match[2])
    date(2000, month, day)
    return month, day


_policy = FlagPolicy()


def use_policy(policy: FlagPolicy) -> None:
    global _policy
    _policy = policy


def current_policy() -> FlagPolicy:
    return _policy


def among(column: InstrumentedAttribute[Any], values: Iterable[Any]) -> ColumnElement[bool]:
    """`column = ANY(:array)`: one parameter however many values a backlog batch brings."""
    return column == any_(literal(list(set(values)), ARRAY(column.type)))


# --- what assessment counts ---------------------------------------------------------------

# The statuses of a flag that hold its income back from assessment.
HOLDING = (FlagStatus.open, FlagStatus.excluded)
RULINGS = (FlagStatus.counted, FlagStatus.excluded)  # what officers may rule


def counted(
    entry: type[LedgerEntry] | AliasedClass[LedgerEntry] = LedgerEntry,
) -> ColumnElement[bool]:
    """True for a ledger entry that assessment counts: no open or excluded flag holds it.

    A NOT EXISTS correlated to `entry` (LedgerEntry or an alias of it in the outer
    query). The cooperative's entries (no household) are never held back.
    """
    held = (
        select(FlagLine.flag_id)
        .join(AttributionFlag, AttributionFlag.id == FlagLine.flag_id)
        .where(
            FlagLine.line_id == entry.line_id,
            FlagLine.household_id == entry.household_id,
            AttributionFlag.status.in_(HOLDING),
        )
    )
    return ~held.exists()


async def flags_of_lines(
    session: AsyncSession, pairs: Iterable[Pair]
) -> dict[Pair, list[AttributionFlag]]:
    """The flags holding each (line_id, household_id), oldest first; pairs without are left out."""
    wanted = set(pairs)
    if not wanted:
        return {}
    rows = await session.execute(
        select(FlagLine.line_id, FlagLine.household_id, AttributionFlag)
        .join(AttributionFlag, AttributionFlag.id == FlagLine.flag_id)
        .where(
            among(FlagLine.line_id, {line for line, _ in wanted}),
            among(FlagLine.household_id, {household for _, household in wanted}),
        )
        .order_by(AttributionFlag.created_at, AttributionFlag.id)
        .execution_options(populate_existing=True)
    )
    out: dict[Pair, list[AttributionFlag]] = defaultdict(list)
    for line_id, household_id, flag in rows:
        if (line_id, household_id) in wanted:
            out[(line_id, household_id)].append(flag)
    return dict(out)


# --- officers' review -----------------------------------------------------------------------


async def list_flags(
    session: AsyncSession,
    actor: User,
    *,
    status: FlagStatus | None,
    rule: FlagRule | None,
    limit: int,
    cursor: str | None,
) -> Page[AttributionFlag]:
    """Flags of the officer's county (admins: all), oldest first, as a review queue."""
    access.ensure_role(actor, Role.officer, Role.admin)
    stmt = select(AttributionFlag)
    if actor.role is Role.officer:
        stmt = stmt.where(AttributionFlag.county_code == actor.county_code)
    if status is not None:
        stmt = stmt.where(AttributionFlag.status == status)
    if rule is not None:
        stmt = stmt.where(AttributionFlag.rule == rule)
    return await keyset_page(
        session,
        stmt,
        order=[AttributionFlag.created_at, AttributionFlag.id],
        kind="attribution-flags",
        cursor=cursor,
        limit=limit,
    )


async def line_counts(session: AsyncSession, flag_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many order lines each flag holds (some or all of their households' parts)."""
    if not flag_ids:
        return {}
    rows = await session.execute(
        select(FlagLine.flag_id, func.count(FlagLine.line_id.distinct()))
        .where(among(FlagLine.flag_id, flag_ids))
        .group_by(FlagLine.flag_id)
    )
    return {flag_id: int(n) for flag_id, n in rows}


async def rule(
    session: AsyncSession,
    actor: User,
    flag_id: uuid.UUID,
    *,
    ruling: FlagStatus,
    reason: str,
    now: datetime,
) -> AttributionFlag:
    """Count or exclude a flag's income. A later ruling replaces it; each one is kept."""
    access.ensure_role(actor, Role.officer, Role.admin)
    if ruling not in RULINGS:
        raise Invalid("A ruling either counts the income or excludes it.", field="ruling")
    reason = reason.strip()
    if not reason:
        raise Invalid("Give the reason for the ruling.", field="reason")
    stmt = select(AttributionFlag).where(AttributionFlag.id == flag_id)
    if actor.role is Role.officer:
        # Another county's flag is not there for this officer, not merely forbidden.
        stmt = stmt.where(AttributionFlag.county_code == actor.county_code)
    # The row lock orders concurrent rulings: the history and the flag agree on the last.
    flag = (
        await session.scalars(stmt.with_for_update().execution_options(populate_existing=True))
    ).one_or_none()
    if flag is None:
        raise NotFound("No such flag.")
    session.add(Ruling(flag_id=flag.id, ruling=ruling, reason=reason, officer_id=actor.id, at=now))
    flag.status = ruling
    flag.ruled_by = actor.id
    flag.ruled_at = now
    flag.ruling_reason = reason
    await session.flush()
    await session.refresh(flag)
    return flag
