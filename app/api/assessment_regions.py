"""Assessment: indicators of a village or a county, for officers of its county and admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from app.deps import SessionDep, now, require
from app.schemas.assessment_regions import (
    CountyIndicatorsOut,
    RegionIndicatorsOut,
    VillageIndicatorsOut,
)
from app.schemas.problem import problem_responses
from app.schemas.regions import RegionCode
from services.assessment.regions import region_indicators
from services.regions.codes import Level
from services.users.models import Role, User

router = APIRouter(prefix="/v1/assessment", tags=["assessment"])
Officer = Annotated[User, Depends(require(Role.officer, Role.admin))]
Year = Annotated[int, Query(ge=2000, le=2100, description="Assessment year.")]


@router.get(
    "/regions/{code}",
    response_model=RegionIndicatorsOut,
    responses=problem_responses(401, 403, 404, 422),
)
async def read_region_indicators(
    session: SessionDep,
    actor: Officer,
    code: Annotated[RegionCode, Path(description="A village or a county.")],
    year: Year,
) -> VillageIndicatorsOut | CountyIndicatorsOut:
    """A village's poverty incidence, sales, stores and Taobao-village test, or a county's
    incidence against the exit threshold with its villages' figures added up."""
    found = await region_indicators(session, actor, code, year, now=now())
    if found.level is Level.village:
        return VillageIndicatorsOut.from_row(found.row)
    return CountyIndicatorsOut.from_row(found.row)
