"""Officers' review queue of income left out of assessment, and their rulings."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.deps import Cursor, Limit, SessionDep, now, require
from app.schemas.attribution import FlagOut, RulingIn
from app.schemas.common import PageOut
from app.schemas.problem import problem_responses
from app.settings import Settings
from services.ledger import flags
from services.ledger.models import AttributionFlag, FlagRule, FlagStatus
from services.users.models import Role, User

router = APIRouter(prefix="/v1/attribution", tags=["attribution"])
Officer = Annotated[User, Depends(require(Role.officer, Role.admin))]
ERRORS = problem_responses(400, 401, 403, 404, 413, 422)


def policy_from(settings: Settings) -> flags.FlagPolicy:
    """The anomaly rules' thresholds, as configured."""
    return flags.FlagPolicy(
        dominant_buyer_bp=settings.flag_dominant_buyer_bp,
        dominant_buyer_min_fen=settings.flag_dominant_buyer_min_fen,
        assessment_date=flags.parse_assessment_date(settings.assessment_date),
        spike_weeks=settings.flag_spike_weeks,
        spike_factor=settings.flag_spike_factor,
        spike_min_fen=settings.flag_spike_min_fen,
    )


def flag_out(flag: AttributionFlag, lines: int) -> FlagOut:
    return FlagOut(
        id=flag.id,
        rule=flag.rule.value,
        status=flag.status.value,
        county_code=flag.county_code,
        order_id=flag.order_id,
        buyer_id=flag.buyer_id,
        household_id=flag.household_id,
        cooperative_id=flag.cooperative_id,
        year=flag.year,
        detail=flag.detail,
        lines=lines,
        created_at=flag.created_at,
        ruled_by=flag.ruled_by,
        ruled_at=flag.ruled_at,
        ruling_reason=flag.ruling_reason,
    )


@router.get("/flags", response_model=PageOut[FlagOut], responses=ERRORS)
async def list_flags(
    session: SessionDep,
    actor: Officer,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: Annotated[
        FlagStatus | None, Query(description="open, counted, excluded or withdrawn.")
    ] = None,
    rule: Annotated[FlagRule | None, Query(description="Only the flags of this rule.")] = None,
) -> PageOut[FlagOut]:
    page = await flags.list_flags(
        session, actor, status=status, rule=rule, limit=limit, cursor=cursor
    )
    counts = await flags.line_counts(session, [f.id for f in page.items])
    return PageOut(
        items=[flag_out(f, counts.get(f.id, 0)) for f in page.items],
        next_cursor=page.next_cursor,
    )


@router.post("/flags/{flag_id}/ruling", response_model=FlagOut, responses=ERRORS)
async def rule_on_flag(
    body: RulingIn, session: SessionDep, actor: Officer, flag_id: uuid.UUID
) -> FlagOut:
    flag = await flags.rule(
        session, actor, flag_id, ruling=FlagStatus(body.ruling), reason=body.reason, now=now()
    )
    counts = await flags.line_counts(session, [flag.id])
    return flag_out(flag, counts.get(flag.id, 0))
