"""The exit workflow (proposal, public notice, objections, decision) and monitoring after exit.

An officer proposes that a household exits on the evidence of one household-year
row: refused, naming every reason, unless the household is exit-eligible that
year. The household moves to `exit_proposed` and a public notice runs for the
configured days; objections are taken while it runs, a decision (approve: the
household exits; reject: it is registered again) only after it ends. Every move
of the household is a recorded transition of `services.households.service`.

Monitoring moves exited households whose year's figures fall under the
monitoring line, or fell sharply, to `monitored`; a return to poverty is then a
direct ruling (monitored -> returned), never an edit.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.assessment.households import (
    Filters,
    HouseholdYear,
    household_year,
    household_year_sql,
)
from services.assessment.models import ExitObjection, ExitProposal, ProposalStatus
from services.assessment.scope import scope_of
from services.assessment.thresholds import ensure_begun, thresholds_for
from services.errors import Conflict, Invalid, NotFound
from services.households import service as households
from services.households.models import Household, HouseholdStatus
from services.pagination import Page, keyset_page
from services.regions.codes import Level
from services.users import access
from services.users.models import Role, User

# The public notice lasts at least 7 days (DOMAIN_FACTS: exit procedure).
NOTICE_DAYS = 7


class Decision(enum.StrEnum):
    approve = "approve"
    reject = "reject"


_OUTCOME = {
    Decision.approve: (ProposalStatus.approved, HouseholdStatus.exited),
    Decision.reject: (ProposalStatus.rejected, HouseholdStatus.registered),
}


def _required(value: str, field: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise Invalid(f"Give {what}.", field=field)
    return value


def _failing_phrase(row: HouseholdYear, reason: str) -> str:
    if reason == "income":
        return (
            f"income: {row.per_capita_fen} fen per person is not above "
            f"the poverty line of {row.poverty_line_fen} fen"
        )
    if reason == "no_members":
        return "no_members: the household has no members to count income over"
    return f"{reason}: the guarantee does not hold"


# --- proposal -----------------------------------------------------------------------------


async def propose(
    session: AsyncSession,
    actor: User,
    household_id: uuid.UUID,
    *,
    year: int,
    reason: str,
    now: datetime,
    notice_days: int = NOTICE_DAYS,
) -> ExitProposal:
    """Propose that a household exits, on its household-year row of `year`."""
    reason = _required(reason, "reason", "the reason for the proposal")
    ensure_begun(year, now)  # an exit rests on a year that has begun
    # Locked before the row is computed: two proposals at once are taken one after
    # the other, and the second sees the household already exit_proposed.
    household = await households.get_household(session, actor, household_id, audit=False, lock=True)
    if not household.poor:
        raise Conflict(
            "Only a registered poor household exits poverty; this one is an ordinary member.",
            reason="not-poor",
        )
    scope = await scope_of(session, actor, household.village_code)
    row = await household_year(session, scope, household.id, year)
    if row is None:  # the household lies in its own village's scope: only a broken card
        raise NotFound("No such household.")
    if not row.exit_eligible:
        raise Conflict(
            f"The household is not exit-eligible in {year}: "
            + "; ".join(_failing_phrase(row, r) for r in row.failing)
            + ".",
            reason="not-exit-eligible",
            field="year",
            year=year,
            reasons=row.failing,
        )
    from_status = household.status
    await households.change_status(
        session,
        actor,
        household.id,
        HouseholdStatus.exit_proposed,
        f"exit proposed on {year}: {reason}",
        workflow=True,
    )
    proposal = ExitProposal(
        id=uuid.uuid4(),
        household_id=household.id,
        county_code=household.county_code,
        year=year,
        status=ProposalStatus.open,
        reason=reason,
        evidence=row.evidence(),
        from_status=from_status.value,
        proposed_by=actor.id,
        notice_starts_at=now,
        notice_ends_at=now + timedelta(days=notice_days),
    )
    session.add(proposal)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        # The household lock already orders proposals; the partial unique index is the
        # last word should a household have left exit_proposed with a proposal still open.
        if "uq_exit_proposals_household_id_open" in str(exc.orig):
            raise Conflict(
                "This household already has an open exit proposal.", reason="proposal-open"
            ) from exc
        raise
    await session.refresh(proposal)
    return proposal


# --- reading ------------------------------------------------------------------------------


async def _proposal(
    session: AsyncSession,
    actor: User,
    proposal_id: uuid.UUID,
    *,
    lock: Literal["share", "update"] | None = None,
) -> ExitProposal:
    access.ensure_role(actor, Role.officer, Role.admin)
    stmt = select(ExitProposal).where(ExitProposal.id == proposal_id)
    if actor.role is Role.officer:
        # Another county's proposal is not there for this officer, not merely forbidden.
        stmt = stmt.where(ExitProposal.county_code == actor.county_code)
    if lock is not None:
        stmt = stmt.with_for_update(read=lock == "share")
    proposal = (await session.scalars(stmt.execution_options(populate_existing=True))).one_or_none()
    if proposal is None:
        raise NotFound("No such exit proposal.")
    return proposal


async def get_proposal(
    session: AsyncSession, actor: User, proposal_id: uuid.UUID
) -> tuple[ExitProposal, list[ExitObjection]]:
    """A proposal and its objections, oldest first."""
    proposal = await _proposal(session, actor, proposal_id)
    objections = await session.scalars(
        select(ExitObjection)
        .where(ExitObjection.proposal_id == proposal.id)
        .order_by(ExitObjection.id)
    )
    return proposal, list(objections.all())


async def list_proposals(
    session: AsyncSession,
    actor: User,
    *,
    status: ProposalStatus | None,
    region: str | None,
    limit: int,
    cursor: str | None,
) -> Page[ExitProposal]:
    """Proposals of a region, oldest first: officers in their county (the default), admins all."""
    access.ensure_role(actor, Role.officer, Role.admin)
    stmt = select(ExitProposal)
    if region is None and actor.role is Role.officer:
        region = actor.county_code
    if region is not None:
        scope = await scope_of(session, actor, region)
        stmt = stmt.where(ExitProposal.county_code.between(scope.county_low, scope.county_high))
        if scope.level in (Level.township, Level.village):
            stmt = stmt.join(Household, Household.id == ExitProposal.household_id).where(
                Household.county_code == ExitProposal.county_code,
                Household.village_code.between(scope.village_low, scope.village_high),
            )
    if status is not None:
        stmt = stmt.where(ExitProposal.status == status)
    return await keyset_page(
        session,
        stmt,
        order=[ExitProposal.created_at, ExitProposal.id],
        kind="exit-proposals",
        cursor=cursor,
        limit=limit,
    )


async def objection_counts(
    session: AsyncSession, proposal_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    if not proposal_ids:
        return {}
    rows = await session.execute(
        select(ExitObjection.proposal_id, func.count())
        .where(ExitObjection.proposal_id.in_(proposal_ids))
        .group_by(ExitObjection.proposal_id)
    )
    return {proposal_id: int(n) for proposal_id, n in rows}


# --- notice and decision ------------------------------------------------------------------


def _ensure_open(proposal: ExitProposal) -> None:
    if proposal.status is not ProposalStatus.open:
        raise Conflict(
            f"This proposal was already decided: {proposal.status.value}.",
            reason="proposal-decided",
            proposal_status=proposal.status.value,
            decided_at=proposal.decided_at.isoformat() if proposal.decided_at else None,
        )


async def object_to(
    session: AsyncSession,
    actor: User,
    proposal_id: uuid.UUID,
    *,
    objector: str | None,
    text: str,
    now: datetime,
) -> ExitObjection:
    """Record an objection while the proposal's public notice runs."""
    text = _required(text, "text", "the objection")
    objector = (objector or "").strip() or None
    # A shared lock: objections do not wait for each other, but a decision waits
    # for them, so none is recorded after the proposal was decided.
    proposal = await _proposal(session, actor, proposal_id, lock="share")
    _ensure_open(proposal)
    if now >= proposal.notice_ends_at:
        raise Conflict(
            f"The public notice ended at {proposal.notice_ends_at.isoformat()}; "
            "objections are no longer taken.",
            reason="notice-ended",
            notice_ends_at=proposal.notice_ends_at.isoformat(),
        )
    objection = ExitObjection(
        proposal_id=proposal.id,
        county_code=proposal.county_code,
        objector=objector,
        text=text,
        recorded_by=actor.id,
        recorded_at=now,
    )
    session.add(objection)
    await session.flush()
    return objection


async def decide(
    session: AsyncSession,
    actor: User,
    proposal_id: uuid.UUID,
    *,
    decision: Decision,
    reason: str,
    now: datetime,
) -> ExitProposal:
    """Approve (the household exits) or reject (it is registered again), once the notice ended."""
    reason = _required(reason, "reason", "the reason for the decision")
    # Locked: of two decisions at once, the second finds the first already taken.
    proposal = await _proposal(session, actor, proposal_id, lock="update")
    _ensure_open(proposal)
    if now < proposal.notice_ends_at:
        raise Conflict(
            f"The public notice runs until {proposal.notice_ends_at.isoformat()}; "
            "decide after it ends.",
            reason="notice-running",
            notice_ends_at=proposal.notice_ends_at.isoformat(),
        )
    outcome, household_status = _OUTCOME[decision]
    verb = "approved" if decision is Decision.approve else "rejected"
    await households.change_status(
        session,
        actor,
        proposal.household_id,
        household_status,
        f"exit {verb}: {reason}",
        workflow=True,
    )
    proposal.status = outcome
    proposal.decided_by = actor.id
    proposal.decided_at = now
    proposal.decision_reason = reason
    await session.flush()
    await session.refresh(proposal)
    return proposal


# --- monitoring ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Monitored:
    """An exited household the sweep moved to monitored, with the figures that moved it."""

    household_id: uuid.UUID
    village_code: str
    per_capita_fen: int | None
    monitoring_line_fen: int
    previous_per_capita_fen: int | None
    monitoring_reasons: list[str]


async def monitor(session: AsyncSession, actor: User, region: str, year: int) -> list[Monitored]:
    """Move every exited household of a region that the year's figures flag to `monitored`."""
    scope = await scope_of(session, actor, region)
    threshold = await thresholds_for(session, year)
    stmt = household_year_sql(
        scope, year, threshold, filters=Filters(status=HouseholdStatus.exited, monitoring=True)
    )
    rows = [HouseholdYear(**r._mapping) for r in await session.execute(stmt)]
    flagged = {row.household_id: row for row in rows}
    if not flagged:
        return []
    # Locked in one statement, in id order, so that two sweeps over overlapping regions
    # cannot deadlock; a household that left `exited` meanwhile is left alone.
    locked = await session.scalars(
        select(Household.id)
        .where(Household.id.in_(list(flagged)), Household.status == HouseholdStatus.exited)
        .order_by(Household.id)
        .with_for_update()
    )
    moved = []
    for household_id in locked.all():
        row = flagged[household_id]
        await households.change_status(
            session,
            actor,
            household_id,
            HouseholdStatus.monitored,
            f"monitoring {year}: {', '.join(row.monitoring_reasons)}",
        )
        moved.append(
            Monitored(
                household_id=household_id,
                village_code=row.village_code,
                per_capita_fen=row.per_capita_fen,
                monitoring_line_fen=row.monitoring_line_fen,
                previous_per_capita_fen=row.previous_per_capita_fen,
                monitoring_reasons=row.monitoring_reasons,
            )
        )
    moved.sort(key=lambda m: (m.village_code, m.household_id))
    return moved
