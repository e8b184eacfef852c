"""Producer organisations and their member households."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.deps import CurrentUser, Cursor, Limit, SessionDep, require
from app.schemas.common import PageOut
from app.schemas.cooperatives import (
    CooperativeCreate,
    CooperativeOut,
    CooperativePatch,
    KindName,
    MemberCreate,
    MemberOut,
)
from app.schemas.problem import problem_responses
from app.schemas.regions import RegionCode
from services.cooperatives import service as cooperatives
from services.cooperatives.models import CooperativeKind, CooperativeStatus, Linkage, Membership
from services.households.service import MemberSummary
from services.users.models import Role, User

router = APIRouter(prefix="/v1", tags=["cooperatives"])
Staff = Annotated[User, Depends(require(Role.admin, Role.officer))]


@router.post(
    "/cooperatives",
    status_code=status.HTTP_201_CREATED,
    response_model=CooperativeOut,
    responses=problem_responses(400, 401, 403, 409, 413, 422),
)
async def create_cooperative(
    body: CooperativeCreate, session: SessionDep, actor: Staff
) -> CooperativeOut:
    data = cooperatives.NewCooperative(
        name=body.name,
        kind=CooperativeKind(body.kind),
        credit_code=body.credit_code,
        village_code=body.village_code,
        linkages=[Linkage(x) for x in body.linkages],
        description=body.description,
        contact_phone=body.contact_phone,
    )
    return CooperativeOut.model_validate(
        await cooperatives.create_cooperative(session, actor, data)
    )


@router.get(
    "/cooperatives", response_model=PageOut[CooperativeOut], responses=problem_responses(422)
)
async def list_cooperatives(
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    region: Annotated[RegionCode | None, Query()] = None,
    kind: KindName | None = None,
) -> PageOut[CooperativeOut]:
    page = await cooperatives.list_cooperatives(
        session,
        region=region,
        kind=CooperativeKind(kind) if kind else None,
        limit=limit,
        cursor=cursor,
    )
    return PageOut(
        items=[CooperativeOut.model_validate(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/cooperatives/{cooperative_id}",
    response_model=CooperativeOut,
    responses=problem_responses(404, 422),
)
async def get_cooperative(session: SessionDep, cooperative_id: uuid.UUID) -> CooperativeOut:
    return CooperativeOut.model_validate(
        await cooperatives.get_cooperative(session, cooperative_id)
    )


@router.patch(
    "/cooperatives/{cooperative_id}",
    response_model=CooperativeOut,
    responses=problem_responses(400, 401, 403, 404, 413, 422),
)
async def update_cooperative(
    body: CooperativePatch, session: SessionDep, actor: Staff, cooperative_id: uuid.UUID
) -> CooperativeOut:
    changes = body.model_dump(exclude_unset=True)
    if changes.get("status"):
        changes["status"] = CooperativeStatus(changes["status"])
    return CooperativeOut.model_validate(
        await cooperatives.update_cooperative(session, actor, cooperative_id, changes)
    )


def member_out(membership: Membership, card: MemberSummary) -> MemberOut:
    return MemberOut(
        household_id=card.household_id,
        head_name=card.head_name,
        village_code=card.village_code,
        poor=card.poor,
        status=card.status.value,
        size=card.size,
        joined_on=membership.joined_on,
        linkages=membership.linkages,
    )


@router.get(
    "/cooperatives/{cooperative_id}/members",
    response_model=list[MemberOut],
    responses=problem_responses(401, 403, 404, 422),
)
async def list_members(
    session: SessionDep, actor: CurrentUser, cooperative_id: uuid.UUID
) -> list[MemberOut]:
    members = await cooperatives.list_members(session, actor, cooperative_id)
    return [member_out(m, card) for m, card in members]


@router.post(
    "/cooperatives/{cooperative_id}/members",
    status_code=status.HTTP_201_CREATED,
    response_model=MemberOut,
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def add_member(
    body: MemberCreate, session: SessionDep, actor: CurrentUser, cooperative_id: uuid.UUID
) -> MemberOut:
    membership = await cooperatives.add_member(
        session,
        actor,
        cooperative_id,
        cooperatives.NewMember(
            household_id=body.household_id,
            joined_on=body.joined_on,
            linkages=[Linkage(x) for x in body.linkages],
        ),
    )
    return member_out(*await cooperatives.member_view(session, membership))
