"""Alkire–Foster multidimensional poverty of a region, for officers and admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.deps import SessionDep, require
from app.schemas.mpi import CATALOGUE_DOC, IndicatorOut, MpiOut
from app.schemas.problem import problem_responses
from app.schemas.regions import RegionCode
from services.assessment import mpi
from services.assessment.scope import scope_of
from services.users.models import Role, User

router = APIRouter(prefix="/v1/assessment", tags=["assessment"])
Officer = Annotated[User, Depends(require(Role.officer, Role.admin))]
ERRORS = problem_responses(401, 403, 404, 422)


@router.get("/mpi/indicators", response_model=list[IndicatorOut], responses=ERRORS)
async def mpi_indicators(actor: Officer) -> list[IndicatorOut]:
    """The indicators `weights` may name, each with its deprivation rule and default weight."""
    return [IndicatorOut.of(i) for i in mpi.CATALOGUE.values()]


@router.get("/mpi", response_model=MpiOut, responses=ERRORS)
async def multidimensional_poverty(
    session: SessionDep,
    actor: Officer,
    region: Annotated[RegionCode, Query(description="Any level; officers: within their county.")],
    year: Annotated[int, Query(ge=2000, le=2100, description="Assessment year.")],
    k: Annotated[
        str | None,
        Query(
            max_length=40,
            description="Poverty cutoff as a fraction, `1/3` or `0.4`, in (0, 1]; default 1/3.",
        ),
    ] = None,
    weights: Annotated[
        str | None,
        Query(
            max_length=500,
            description="`indicator:weight,...` naming a subset of the catalogue with "
            "positive fraction weights summing exactly to 1, e.g. "
            "`schooling:1/4,health:1/4,housing:1/4,income:1/4`; default: every indicator "
            "at its default weight. The catalogue:\n\n" + CATALOGUE_DOC,
        ),
    ] = None,
) -> MpiOut:
    """H, A, M0 = H × A, and each indicator's headcounts and contribution.

    A household's deprivations apply to every member; persons are counted. The
    `income` indicator needs the year's thresholds (404 without them).
    """
    scope = await scope_of(session, actor, region)
    cutoff = mpi.DEFAULT_CUTOFF if k is None else mpi.parse_fraction(k, field="k")
    chosen = None if weights is None else mpi.parse_weights(weights)
    measures = await mpi.multidimensional_poverty(
        session, scope, year, cutoff=cutoff, weights=chosen
    )
    return MpiOut.of(scope.code, year, measures)
