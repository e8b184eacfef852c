"""Assessment: thresholds by year and household-year rows, for officers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.deps import Cursor, Limit, SessionDep, require
from app.schemas.assessment import HouseholdYearOut, ThresholdEditOut, ThresholdsIn, ThresholdsOut
from app.schemas.common import PageOut
from app.schemas.households import StatusName
from app.schemas.problem import problem_responses
from app.schemas.regions import RegionCode
from services.assessment import thresholds
from services.assessment.households import Filters, household_rows
from services.assessment.scope import scope_of
from services.households.models import HouseholdStatus
from services.users.models import Role, User

router = APIRouter(prefix="/v1/assessment", tags=["assessment"])
Officer = Annotated[User, Depends(require(Role.officer, Role.admin))]
Admin = Annotated[User, Depends(require(Role.admin))]
Year = Annotated[int, Query(ge=2000, le=2100, description="Assessment year.")]
ERRORS = problem_responses(401, 403, 404, 422)


@router.get("/thresholds/{year}", response_model=ThresholdsOut, responses=ERRORS)
async def read_thresholds(session: SessionDep, actor: Officer, year: int) -> ThresholdsOut:
    return ThresholdsOut.model_validate(await thresholds.read_thresholds(session, actor, year))


@router.put(
    "/thresholds/{year}",
    response_model=ThresholdsOut,
    responses={
        **problem_responses(400, 401, 403, 404, 413, 422),
        201: {"model": ThresholdsOut, "description": "Created"},
    },
)
async def put_thresholds(
    body: ThresholdsIn, session: SessionDep, actor: Admin, year: int, response: Response
) -> ThresholdsOut:
    """Create or replace a year's figures; every change is kept in the year's history."""
    row, created = await thresholds.put_thresholds(
        session, actor, year, thresholds.Figures(**body.model_dump())
    )
    if created:
        response.status_code = status.HTTP_201_CREATED
    return ThresholdsOut.model_validate(row)


@router.get("/thresholds/{year}/history", response_model=list[ThresholdEditOut], responses=ERRORS)
async def threshold_history(
    session: SessionDep, actor: Officer, year: int
) -> list[ThresholdEditOut]:
    edits = await thresholds.threshold_history(session, actor, year)
    return [ThresholdEditOut.model_validate(e) for e in edits]


@router.get("/households", response_model=PageOut[HouseholdYearOut], responses=ERRORS)
async def household_year_rows(
    session: SessionDep,
    actor: Officer,
    region: Annotated[RegionCode, Query(description="Any level; officers: within their county.")],
    year: Year,
    status: StatusName | None = None,
    exit_eligible: bool | None = None,
    monitoring: bool | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> PageOut[HouseholdYearOut]:
    """Income counted for the year, per capita, the line, exit eligibility and monitoring."""
    scope = await scope_of(session, actor, region)
    page = await household_rows(
        session,
        scope,
        year,
        filters=Filters(
            status=HouseholdStatus(status) if status else None,
            exit_eligible=exit_eligible,
            monitoring=monitoring,
        ),
        limit=limit,
        cursor=cursor,
    )
    return PageOut(
        items=[HouseholdYearOut.model_validate(r) for r in page.items],
        next_cursor=page.next_cursor,
    )
