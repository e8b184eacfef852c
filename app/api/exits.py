"""The exit workflow and the monitoring sweep, for the officers of a county."""

from __future__ import annotations

import uuid
from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.deps import Cursor, Limit, SessionDep, SettingsDep, now, require
from app.schemas.common import PageOut
from app.schemas.exits import (
    DecisionIn,
    MonitoredOut,
    MonitoringIn,
    MonitoringOut,
    ObjectionIn,
    ObjectionOut,
    ProposalDetailOut,
    ProposalIn,
    ProposalOut,
    ProposalStatusName,
)
from app.schemas.problem import problem_responses
from app.schemas.regions import RegionCode
from services.assessment import exits
from services.assessment.models import ExitObjection, ExitProposal, ProposalStatus
from services.users.models import Role, User

router = APIRouter(prefix="/v1")
TAGS: list[str | Enum] = ["exits"]
Officer = Annotated[User, Depends(require(Role.officer, Role.admin))]
ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422)


def proposal_out(proposal: ExitProposal, objections: int) -> ProposalOut:
    return ProposalOut(
        id=proposal.id,
        household_id=proposal.household_id,
        county_code=proposal.county_code,
        year=proposal.year,
        status=proposal.status.value,
        reason=proposal.reason,
        evidence=proposal.evidence,
        from_status=proposal.from_status,
        proposed_by=proposal.proposed_by,
        notice_starts_at=proposal.notice_starts_at,
        notice_ends_at=proposal.notice_ends_at,
        objection_count=objections,
        decided_by=proposal.decided_by,
        decided_at=proposal.decided_at,
        decision_reason=proposal.decision_reason,
        created_at=proposal.created_at,
    )


def detail_out(proposal: ExitProposal, objections: list[ExitObjection]) -> ProposalDetailOut:
    return ProposalDetailOut(
        **proposal_out(proposal, len(objections)).model_dump(),
        objections=[ObjectionOut.model_validate(o) for o in objections],
    )


@router.post(
    "/households/{household_id}/exit-proposals",
    status_code=status.HTTP_201_CREATED,
    response_model=ProposalOut,
    responses=ERRORS,
    tags=TAGS,
)
async def propose_exit(
    body: ProposalIn,
    session: SessionDep,
    settings: SettingsDep,
    actor: Officer,
    household_id: uuid.UUID,
) -> ProposalOut:
    """Propose an exit: refused (409, naming every reason) unless the household is
    exit-eligible in the year; the household moves to exit_proposed and the public
    notice starts."""
    proposal = await exits.propose(
        session,
        actor,
        household_id,
        year=body.year,
        reason=body.reason,
        now=now(),
        notice_days=settings.exit_notice_days,
    )
    return proposal_out(proposal, 0)


@router.get("/exit-proposals", response_model=PageOut[ProposalOut], responses=ERRORS, tags=TAGS)
async def list_proposals(
    session: SessionDep,
    actor: Officer,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: Annotated[
        ProposalStatusName | None, Query(description="open, approved or rejected.")
    ] = None,
    region: Annotated[
        RegionCode | None, Query(description="Any level; officers: defaults to their county.")
    ] = None,
) -> PageOut[ProposalOut]:
    page = await exits.list_proposals(
        session,
        actor,
        status=ProposalStatus(status) if status else None,
        region=region,
        limit=limit,
        cursor=cursor,
    )
    counts = await exits.objection_counts(session, [p.id for p in page.items])
    return PageOut(
        items=[proposal_out(p, counts.get(p.id, 0)) for p in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/exit-proposals/{proposal_id}", response_model=ProposalDetailOut, responses=ERRORS, tags=TAGS
)
async def get_proposal(
    session: SessionDep, actor: Officer, proposal_id: uuid.UUID
) -> ProposalDetailOut:
    proposal, objections = await exits.get_proposal(session, actor, proposal_id)
    return detail_out(proposal, objections)


@router.post(
    "/exit-proposals/{proposal_id}/objections",
    status_code=status.HTTP_201_CREATED,
    response_model=ObjectionOut,
    responses=ERRORS,
    tags=TAGS,
)
async def object_to_proposal(
    body: ObjectionIn, session: SessionDep, actor: Officer, proposal_id: uuid.UUID
) -> ObjectionOut:
    """Record an objection; only while the public notice runs."""
    objection = await exits.object_to(
        session, actor, proposal_id, objector=body.objector, text=body.text, now=now()
    )
    return ObjectionOut.model_validate(objection)


@router.post(
    "/exit-proposals/{proposal_id}/decision",
    response_model=ProposalDetailOut,
    responses=ERRORS,
    tags=TAGS,
)
async def decide_proposal(
    body: DecisionIn, session: SessionDep, actor: Officer, proposal_id: uuid.UUID
) -> ProposalDetailOut:
    """Approve (the household exits) or reject (registered again); only after the notice."""
    await exits.decide(
        session,
        actor,
        proposal_id,
        decision=exits.Decision(body.decision),
        reason=body.reason,
        now=now(),
    )
    proposal, objections = await exits.get_proposal(session, actor, proposal_id)
    return detail_out(proposal, objections)


@router.post(
    "/assessment/monitoring", response_model=MonitoringOut, responses=ERRORS, tags=["assessment"]
)
async def monitoring_sweep(
    body: MonitoringIn, session: SessionDep, actor: Officer
) -> MonitoringOut:
    """Move every exited household of the region whose household-year row of `year`
    is flagged for monitoring to monitored, and answer which moved and why."""
    moved = await exits.monitor(session, actor, body.region, body.year)
    return MonitoringOut(
        region=body.region,
        year=body.year,
        moved=[MonitoredOut.model_validate(m) for m in moved],
    )
