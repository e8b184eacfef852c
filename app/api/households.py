"""File cards of households, for the officers of their county."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.deps import Cursor, Limit, SessionDep, SettingsDep, require, today
from app.schemas.common import PageOut
from app.schemas.households import (
    CadreIn,
    CadreOut,
    HouseholdCreate,
    HouseholdOut,
    HouseholdPatch,
    IncomeIn,
    IncomeOut,
    MemberOut,
    StatusChangeIn,
    StatusChangeOut,
    StatusName,
)
from app.schemas.problem import problem_responses
from app.schemas.regions import RegionCode
from services.households import service as households
from services.households.models import (
    Cause,
    Education,
    Health,
    Household,
    HouseholdStatus,
    HouseholdType,
    IncomeKind,
    Labour,
    Relation,
    Sex,
    Standard,
)
from services.users.models import Role, User

router = APIRouter(prefix="/v1", tags=["households"])
Officer = Annotated[User, Depends(require(Role.admin, Role.officer))]
ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422)


def household_out(household: Household) -> HouseholdOut:
    members = [
        MemberOut.model_validate(m, from_attributes=True).model_copy(
            update={
                "id_number_masked": ("*" * 14 + m.id_number_last4) if m.id_number_last4 else None
            }
        )
        for m in household.members
    ]
    return HouseholdOut(
        id=household.id,
        county_code=household.county_code,
        village_code=household.village_code,
        address=household.address,
        phone=household.phone,
        poor=household.poor,
        household_type=household.household_type.value,
        standard=household.standard.value,
        main_cause=household.main_cause.value,
        other_causes=household.other_causes,
        registration_year=household.registration_year,
        status=household.status.value,
        size=len(members),
        members=members,
        **{name: getattr(household, name) for name in households.GUARANTEES},
        created_at=household.created_at,
        updated_at=household.updated_at,
    )


@router.post(
    "/households",
    status_code=status.HTTP_201_CREATED,
    response_model=HouseholdOut,
    responses=ERRORS,
)
async def create_household(
    body: HouseholdCreate, session: SessionDep, settings: SettingsDep, actor: Officer
) -> HouseholdOut:
    card = body.model_dump(exclude={"members"})
    data = households.NewHousehold(
        **card
        | {
            "household_type": HouseholdType(body.household_type),
            "standard": Standard(body.standard),
            "main_cause": Cause(body.main_cause),
            "other_causes": [Cause(c) for c in body.other_causes],
        },
        members=[
            households.NewMember(
                **m.model_dump()
                | {
                    "sex": Sex(m.sex),
                    "relation": Relation(m.relation),
                    "education": Education(m.education),
                    "health": Health(m.health),
                    "labour": Labour(m.labour),
                }
            )
            for m in body.members
        ],
    )
    household = await households.create_household(
        session, actor, data, pii_key=settings.pii_hash_key, today=today()
    )
    return household_out(household)


@router.get("/households", response_model=PageOut[HouseholdOut], responses=ERRORS)
async def list_households(
    session: SessionDep,
    actor: Officer,
    limit: Limit = 50,
    cursor: Cursor = None,
    region: Annotated[RegionCode | None, Query(description="Defaults to your county.")] = None,
    status: StatusName | None = None,
) -> PageOut[HouseholdOut]:
    page = await households.list_households(
        session,
        actor,
        region=region,
        status=HouseholdStatus(status) if status else None,
        limit=limit,
        cursor=cursor,
    )
    return PageOut(items=[household_out(h) for h in page.items], next_cursor=page.next_cursor)


@router.get("/households/{household_id}", response_model=HouseholdOut, responses=ERRORS)
async def get_household(
    session: SessionDep, actor: Officer, household_id: uuid.UUID
) -> HouseholdOut:
    return household_out(await households.get_household(session, actor, household_id))


@router.patch("/households/{household_id}", response_model=HouseholdOut, responses=ERRORS)
async def update_household(
    body: HouseholdPatch, session: SessionDep, actor: Officer, household_id: uuid.UUID
) -> HouseholdOut:
    changes = body.model_dump(exclude_unset=True)
    household = await households.update_household(session, actor, household_id, changes)
    return household_out(household)


@router.post("/households/{household_id}/status", response_model=HouseholdOut, responses=ERRORS)
async def change_status(
    body: StatusChangeIn, session: SessionDep, actor: Officer, household_id: uuid.UUID
) -> HouseholdOut:
    household = await households.change_status(
        session, actor, household_id, HouseholdStatus(body.status), body.reason
    )
    return household_out(household)


@router.get(
    "/households/{household_id}/status-history",
    response_model=list[StatusChangeOut],
    responses=ERRORS,
)
async def status_history(
    session: SessionDep, actor: Officer, household_id: uuid.UUID
) -> list[StatusChangeOut]:
    changes = await households.status_history(session, actor, household_id)
    return [StatusChangeOut.model_validate(c) for c in changes]


@router.post(
    "/households/{household_id}/incomes",
    status_code=status.HTTP_201_CREATED,
    response_model=IncomeOut,
    responses=ERRORS,
)
async def add_income(
    body: IncomeIn, session: SessionDep, actor: Officer, household_id: uuid.UUID
) -> IncomeOut:
    income = await households.add_income(
        session,
        actor,
        household_id,
        households.NewIncome(
            year=body.year, kind=IncomeKind(body.kind), amount_fen=body.amount_fen, note=body.note
        ),
        today=today(),
    )
    return IncomeOut.model_validate(income)


@router.get("/households/{household_id}/incomes", response_model=list[IncomeOut], responses=ERRORS)
async def list_incomes(
    session: SessionDep,
    actor: Officer,
    household_id: uuid.UUID,
    year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
) -> list[IncomeOut]:
    incomes = await households.list_incomes(session, actor, household_id, year=year)
    return [IncomeOut.model_validate(i) for i in incomes]


@router.post(
    "/households/{household_id}/cadres",
    status_code=status.HTTP_201_CREATED,
    response_model=list[CadreOut],
    responses=ERRORS,
)
async def add_cadre(
    body: CadreIn, session: SessionDep, actor: Officer, household_id: uuid.UUID
) -> list[CadreOut]:
    await households.add_cadre(
        session, actor, household_id, households.NewCadre(**body.model_dump())
    )
    return [CadreOut.model_validate(c) for c in await households.list_cadres(session, household_id)]
