"""Regions by division code and village service sites."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from app.deps import Cursor, Limit, SessionDep, require
from app.schemas.common import PageOut
from app.schemas.problem import problem_responses
from app.schemas.regions import LevelName, RegionCode, RegionCreate, RegionOut, SiteCreate, SiteOut
from services.regions import service as regions
from services.regions.codes import Level
from services.regions.models import SiteKind
from services.users.models import Role, User

router = APIRouter(prefix="/v1", tags=["regions"])
Admin = Annotated[User, Depends(require(Role.admin))]


@router.get("/regions", response_model=PageOut[RegionOut], responses=problem_responses(422))
async def list_regions(
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    parent: Annotated[RegionCode | None, Query(description="Children of this region.")] = None,
    level: LevelName | None = None,
) -> PageOut[RegionOut]:
    page = await regions.list_regions(
        session, parent=parent, level=Level(level) if level else None, limit=limit, cursor=cursor
    )
    return PageOut(
        items=[RegionOut.model_validate(r) for r in page.items], next_cursor=page.next_cursor
    )


@router.get("/regions/{code}", response_model=RegionOut, responses=problem_responses(404, 422))
async def get_region(session: SessionDep, code: Annotated[RegionCode, Path()]) -> RegionOut:
    return RegionOut.model_validate(await regions.get_region(session, code))


@router.post(
    "/regions",
    status_code=status.HTTP_201_CREATED,
    response_model=RegionOut,
    responses=problem_responses(400, 401, 403, 409, 413, 422),
)
async def create_region(body: RegionCreate, session: SessionDep, _: Admin) -> RegionOut:
    data = regions.NewRegion(
        **body.model_dump() | {"level": Level(body.level) if body.level else None}
    )
    return RegionOut.model_validate(await regions.create_region(session, data))


@router.get("/service-sites", response_model=PageOut[SiteOut], responses=problem_responses(422))
async def list_sites(
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    region: Annotated[RegionCode | None, Query(description="Sites under this region.")] = None,
) -> PageOut[SiteOut]:
    page = await regions.list_sites(session, region=region, limit=limit, cursor=cursor)
    return PageOut(
        items=[SiteOut.model_validate(s) for s in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/service-sites/{site_id}", response_model=SiteOut, responses=problem_responses(404, 422)
)
async def get_site(session: SessionDep, site_id: uuid.UUID) -> SiteOut:
    return SiteOut.model_validate(await regions.get_site(session, site_id))


@router.post(
    "/service-sites",
    status_code=status.HTTP_201_CREATED,
    response_model=SiteOut,
    responses=problem_responses(400, 401, 403, 413, 422),
)
async def create_site(body: SiteCreate, session: SessionDep, _: Admin) -> SiteOut:
    data = regions.NewSite(**body.model_dump() | {"kind": SiteKind(body.kind)})
    return SiteOut.model_validate(await regions.create_site(session, data))
