"""File cards: creation, reading within scope, edits, status history, incomes, cadres."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from services.audit.service import record
from services.errors import Conflict, Forbidden, Invalid, NotFound
from services.households.ids import parse_id_number
from services.households.models import (
    Cause,
    Education,
    Health,
    Household,
    HouseholdStatus,
    HouseholdType,
    IncomeKind,
    Labour,
    Member,
    OtherIncome,
    PairedCadre,
    Relation,
    Sex,
    Standard,
    StatusChange,
)
from services.pagination import Page, keyset_page
from services.regions.codes import Level, code_range, county_of
from services.regions.service import require_region
from services.users import access
from services.users.models import Role, User

GUARANTEES = (
    "food_clothing",
    "compulsory_education",
    "basic_medical",
    "safe_housing",
    "safe_drinking_water",
)

# Allowed status moves, as data. The exit workflow (proposal, notice, decision)
# owns the moves into exit_proposed and exited; the others are direct rulings.
TRANSITIONS: dict[HouseholdStatus, frozenset[HouseholdStatus]] = {
    HouseholdStatus.registered: frozenset(
        {HouseholdStatus.exit_proposed, HouseholdStatus.deregistered}
    ),
    HouseholdStatus.exit_proposed: frozenset({HouseholdStatus.exited, HouseholdStatus.registered}),
    HouseholdStatus.exited: frozenset({HouseholdStatus.monitored}),
    HouseholdStatus.monitored: frozenset({HouseholdStatus.exited, HouseholdStatus.returned}),
    HouseholdStatus.returned: frozenset(
        {HouseholdStatus.exit_proposed, HouseholdStatus.deregistered}
    ),
    HouseholdStatus.deregistered: frozenset(),
}
WORKFLOW_ONLY = frozenset({HouseholdStatus.exit_proposed, HouseholdStatus.exited})


@dataclass(frozen=True, slots=True)
class NewMember:
    name: str
    sex: Sex
    relation: Relation
    education: Education
    health: Health
    labour: Labour
    id_number: str | None = None
    ethnicity: str | None = None
    in_school: bool = False
    migrant_work_months: int = 0
    medical_insurance: bool = False
    pension_insurance: bool = False
    allowance: bool = False


@dataclass(frozen=True, slots=True)
class NewHousehold:
    village_code: str
    household_type: HouseholdType
    standard: Standard
    main_cause: Cause
    registration_year: int
    members: list[NewMember]
    other_causes: list[Cause] = field(default_factory=list)
    address: str | None = None
    phone: str | None = None
    poor: bool = True
    food_clothing: bool = False
    compulsory_education: bool = False
    basic_medical: bool = False
    safe_housing: bool = False
    safe_drinking_water: bool = False


def ensure_officer_of(actor: User, county_code: str) -> None:
    access.ensure_role(actor, Role.admin, Role.officer)
    access.ensure_county(actor, county_code)


def _check_causes(main: Cause, others: list[Cause]) -> list[str]:
    if len(others) > 2:
        raise Invalid("At most two other causes.", field="other_causes")
    if len(set(others)) != len(others) or main in others:
        raise Invalid(
            "Other causes must differ from each other and from the main cause.",
            field="other_causes",
        )
    return [cause.value for cause in others]


async def create_household(
    session: AsyncSession, actor: User, data: NewHousehold, *, pii_key: bytes, today: date
) -> Household:
    await require_region(session, data.village_code, Level.village, field="village_code")
    ensure_officer_of(actor, data.village_code)
    heads = [m for m in data.members if m.relation is Relation.head]
    if len(heads) != 1:
        raise Invalid("A household has exactly one head among its members.", field="members")
    if not 1978 <= data.registration_year <= today.year:
        raise Invalid("The registration year is out of range.", field="registration_year")
    other_causes = _check_causes(data.main_cause, data.other_causes)
    card = {f.name: getattr(data, f.name) for f in fields(data)} | {"other_causes": other_causes}
    card.pop("members")
    household = Household(id=uuid.uuid4(), county_code=county_of(data.village_code), **card)
    session.add(household)
    seen: set[str] = set()
    for position, m in enumerate(data.members):
        values = {f.name: getattr(m, f.name) for f in fields(m)}
        id_number = values.pop("id_number")
        parsed = None
        if id_number:
            parsed = parse_id_number(
                id_number, key=pii_key, today=today, field=f"members.{position}.id_number"
            )
            if parsed.hash in seen:
                raise Conflict(
                    "The same ID number appears twice.", field=f"members.{position}.id_number"
                )
            seen.add(parsed.hash)
        session.add(
            Member(
                household_id=household.id,
                position=position,
                **values,
                id_number_hash=parsed.hash if parsed else None,
                id_number_last4=parsed.last4 if parsed else None,
                birth_year=parsed.birth_date.year if parsed else None,
            )
        )
    session.add(
        StatusChange(
            household_id=household.id,
            from_status=None,
            to_status=HouseholdStatus.registered.value,
            reason="registered",
            actor_id=actor.id,
        )
    )
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        if "uq_household_members_id_number_hash" in str(exc.orig):
            raise Conflict(
                "A person with this ID number is already registered.", field="members"
            ) from exc
        raise
    return await _load(session, household.id)


async def _load(session: AsyncSession, household_id: uuid.UUID, *, lock: bool = False) -> Household:
    stmt = (
        select(Household)
        .where(Household.id == household_id)
        .options(selectinload(Household.members))
        .execution_options(populate_existing=True)
    )
    if lock:
        stmt = stmt.with_for_update(of=Household)
    household = (await session.scalars(stmt)).one_or_none()
    if household is None:
        raise NotFound("No such household.")
    return household


async def get_household(
    session: AsyncSession,
    actor: User,
    household_id: uuid.UUID,
    *,
    audit: bool = True,
    lock: bool = False,
) -> Household:
    household = await _load(session, household_id, lock=lock)
    try:
        ensure_officer_of(actor, household.county_code)
    except Forbidden as exc:
        # Outside one's county a household does not exist, as far as the caller knows.
        raise NotFound("No such household.") from exc
    if audit:
        await record(session, actor, "household.read", "household", str(household.id))
    return household


async def household_county(session: AsyncSession, household_id: uuid.UUID) -> str | None:
    return (
        await session.execute(select(Household.county_code).where(Household.id == household_id))
    ).scalar_one_or_none()


async def list_households(
    session: AsyncSession,
    actor: User,
    *,
    region: str | None,
    status: HouseholdStatus | None,
    limit: int,
    cursor: str | None,
) -> Page[Household]:
    access.ensure_role(actor, Role.admin, Role.officer)
    if region is None:
        if actor.role is not Role.officer or actor.county_code is None:
            raise Invalid("Name a region to list households.", field="region")
        region = actor.county_code
    ensure_officer_of(actor, region)
    low, high = code_range(region)
    stmt = (
        select(Household)
        .where(
            Household.county_code == county_of(region), Household.village_code.between(low, high)
        )
        .options(selectinload(Household.members))
    )
    if status is not None:
        stmt = stmt.where(Household.status == status)
    page = await keyset_page(
        session,
        stmt,
        order=[Household.village_code, Household.id],
        kind="households",
        cursor=cursor,
        limit=limit,
    )
    await record(session, actor, "household.list", "household", [str(h.id) for h in page.items])
    return page


EDITABLE = frozenset(
    {
        "address",
        "phone",
        "poor",
        "household_type",
        "standard",
        "main_cause",
        "other_causes",
        *GUARANTEES,
    }
)


async def update_household(
    session: AsyncSession, actor: User, household_id: uuid.UUID, changes: dict[str, Any]
) -> Household:
    household = await get_household(session, actor, household_id, audit=False, lock=True)
    unknown = set(changes) - EDITABLE
    if unknown:
        raise Invalid("This field cannot be edited here.", field=sorted(unknown)[0])
    main = changes.get("main_cause", household.main_cause)
    others = changes.get("other_causes", [Cause(c) for c in household.other_causes])
    changes = dict(changes)
    if "main_cause" in changes or "other_causes" in changes:
        changes["other_causes"] = _check_causes(Cause(main), [Cause(c) for c in others])
    for name, value in changes.items():
        setattr(household, name, value)
    household.updated_at = datetime.now(UTC)
    await session.flush()
    await record(
        session, actor, "household.update", "household", str(household.id), fields=sorted(changes)
    )
    return household


async def change_status(
    session: AsyncSession,
    actor: User,
    household_id: uuid.UUID,
    to: HouseholdStatus,
    reason: str,
    *,
    workflow: bool = False,
) -> Household:
    """Move a household's status and append the change to its history, in one step."""
    # Locked as it is read: two officers ruling at once must not both move from one state.
    household = await get_household(session, actor, household_id, audit=False, lock=True)
    current = household.status
    if to not in TRANSITIONS[current]:
        raise Conflict(
            f"A household cannot move from {current.value} to {to.value}.",
            field="status",
            from_status=current.value,
            to_status=to.value,
        )
    # Out of exit_proposed only a decision on the open proposal moves it, so that no
    # proposal is left open behind a household that has moved on.
    if (to in WORKFLOW_ONLY or current is HouseholdStatus.exit_proposed) and not workflow:
        raise Conflict(
            f"Moving to {to.value} goes through the exit workflow.",
            field="status",
            from_status=current.value,
            to_status=to.value,
        )
    household.status = to
    household.updated_at = datetime.now(UTC)
    session.add(
        StatusChange(
            household_id=household.id,
            from_status=current.value,
            to_status=to.value,
            reason=reason,
            actor_id=actor.id,
        )
    )
    await session.flush()
    return household


async def status_history(
    session: AsyncSession, actor: User, household_id: uuid.UUID
) -> list[StatusChange]:
    await get_household(session, actor, household_id, audit=False)
    stmt = (
        select(StatusChange)
        .where(StatusChange.household_id == household_id)
        .order_by(StatusChange.id)
    )
    return list((await session.scalars(stmt)).all())


@dataclass(frozen=True, slots=True)
class NewIncome:
    year: int
    kind: IncomeKind
    amount_fen: int
    note: str | None = None


async def add_income(
    session: AsyncSession, actor: User, household_id: uuid.UUID, data: NewIncome, *, today: date
) -> OtherIncome:
    household = await get_household(session, actor, household_id, audit=False)
    if not 2000 <= data.year <= today.year:
        raise Invalid("The year is out of range.", field="year")
    income = OtherIncome(
        household_id=household.id,
        county_code=household.county_code,
        year=data.year,
        kind=data.kind,
        amount_fen=data.amount_fen,
        note=data.note,
        recorded_by=actor.id,
    )
    session.add(income)
    await session.flush()
    return income


async def list_incomes(
    session: AsyncSession, actor: User, household_id: uuid.UUID, *, year: int | None
) -> list[OtherIncome]:
    await get_household(session, actor, household_id, audit=False)
    stmt = select(OtherIncome).where(OtherIncome.household_id == household_id)
    if year is not None:
        stmt = stmt.where(OtherIncome.year == year)
    return list((await session.scalars(stmt.order_by(OtherIncome.year, OtherIncome.id))).all())


@dataclass(frozen=True, slots=True)
class NewCadre:
    name: str
    start_date: date
    unit: str | None = None
    level: str | None = None
    phone: str | None = None


async def add_cadre(
    session: AsyncSession, actor: User, household_id: uuid.UUID, data: NewCadre
) -> PairedCadre:
    household = await get_household(session, actor, household_id, audit=False)
    cadre = PairedCadre(
        household_id=household.id,
        name=data.name,
        unit=data.unit,
        level=data.level,
        phone=data.phone,
        start_date=data.start_date,
    )
    session.add(cadre)
    await session.flush()
    return cadre


async def list_cadres(session: AsyncSession, household_id: uuid.UUID) -> list[PairedCadre]:
    stmt = (
        select(PairedCadre)
        .where(PairedCadre.household_id == household_id)
        .order_by(PairedCadre.start_date, PairedCadre.id)
    )
    return list((await session.scalars(stmt)).all())


@dataclass(frozen=True, slots=True)
class MemberSummary:
    """What a cooperative's manager may see of a member household: no ID data."""

    household_id: uuid.UUID
    head_name: str
    village_code: str
    poor: bool
    status: HouseholdStatus
    size: int


async def summaries(
    session: AsyncSession, household_ids: list[uuid.UUID]
) -> dict[uuid.UUID, MemberSummary]:
    if not household_ids:
        return {}
    head = (
        select(Member.household_id, Member.name)
        .where(Member.relation == Relation.head, Member.household_id.in_(household_ids))
        .subquery()
    )
    size = (
        select(Member.household_id, func.count().label("size"))
        .where(Member.household_id.in_(household_ids))
        .group_by(Member.household_id)
        .subquery()
    )
    stmt = (
        select(
            Household.id,
            head.c.name,
            Household.village_code,
            Household.poor,
            Household.status,
            size.c.size,
        )
        .join(head, head.c.household_id == Household.id)
        .join(size, size.c.household_id == Household.id)
        .where(Household.id.in_(household_ids))
    )
    return {
        row[0]: MemberSummary(row[0], row[1], row[2], row[3], row[4], int(row[5]))
        for row in (await session.execute(stmt)).all()
    }
