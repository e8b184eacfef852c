"""Producer organisations and their member households."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from stdnum.cn import uscc
from stdnum.exceptions import ValidationError

from services.audit.service import record
from services.cooperatives.models import (
    Cooperative,
    CooperativeKind,
    CooperativeStatus,
    Linkage,
    Membership,
)
from services.errors import Conflict, Invalid, NotFound
from services.pagination import Page, keyset_page
from services.regions.codes import Level, code_range, county_of
from services.regions.service import require_region
from services.users import access
from services.users.models import Role, User

if TYPE_CHECKING:
    from services.households.service import MemberSummary


def validate_credit_code(value: str) -> str:
    """A unified social credit code (统一社会信用代码): 18 characters with a check character."""
    try:
        return str(uscc.validate(value))
    except ValidationError as exc:
        raise Invalid(
            f"Not a valid unified social credit code: {exc}.", field="credit_code"
        ) from exc


@dataclass(frozen=True, slots=True)
class NewCooperative:
    name: str
    kind: CooperativeKind
    credit_code: str
    village_code: str
    linkages: list[Linkage] = field(default_factory=list)
    description: str | None = None
    contact_phone: str | None = None


async def create_cooperative(
    session: AsyncSession, actor: User, data: NewCooperative
) -> Cooperative:
    access.ensure_role(actor, Role.admin, Role.officer)
    await require_region(session, data.village_code, Level.village, field="village_code")
    access.ensure_county(actor, data.village_code)
    credit_code = validate_credit_code(data.credit_code)
    stmt = (
        insert(Cooperative)
        .values(
            id=uuid.uuid4(),
            name=data.name,
            kind=data.kind,
            credit_code=credit_code,
            village_code=data.village_code,
            county_code=county_of(data.village_code),
            linkages=sorted({linkage.value for linkage in data.linkages}),
            description=data.description,
            contact_phone=data.contact_phone,
            status=CooperativeStatus.active,
        )
        .on_conflict_do_nothing(index_elements=[Cooperative.credit_code])
        .returning(Cooperative)
    )
    cooperative = (await session.scalars(stmt)).one_or_none()
    if cooperative is None:
        raise Conflict("A producer organisation with this credit code exists.", field="credit_code")
    return cooperative


async def get_cooperative(
    session: AsyncSession, cooperative_id: uuid.UUID, *, lock: bool = False
) -> Cooperative:
    cooperative = await session.get(Cooperative, cooperative_id, with_for_update=lock)
    if cooperative is None:
        raise NotFound("No such producer organisation.")
    return cooperative


async def list_cooperatives(
    session: AsyncSession,
    *,
    region: str | None,
    kind: CooperativeKind | None,
    limit: int,
    cursor: str | None,
) -> Page[Cooperative]:
    stmt = select(Cooperative).where(Cooperative.status == CooperativeStatus.active)
    if region:
        low, high = code_range(region)
        stmt = stmt.where(Cooperative.village_code.between(low, high))
    if kind:
        stmt = stmt.where(Cooperative.kind == kind)
    return await keyset_page(
        session,
        stmt,
        order=[Cooperative.name, Cooperative.id],
        kind="cooperatives",
        cursor=cursor,
        limit=limit,
    )


EDITABLE = frozenset({"name", "status", "linkages", "description", "contact_phone"})


async def update_cooperative(
    session: AsyncSession, actor: User, cooperative_id: uuid.UUID, changes: dict[str, Any]
) -> Cooperative:
    """Admins and the county's officers edit an organisation; suspending it delists its goods."""
    from services.catalog.service import set_cooperative_listing

    access.ensure_role(actor, Role.admin, Role.officer)
    cooperative = await get_cooperative(session, cooperative_id, lock=True)
    access.ensure_county(actor, cooperative.county_code)
    unknown = set(changes) - EDITABLE
    if unknown:
        raise Invalid("This field cannot be edited here.", field=sorted(unknown)[0])
    for name, value in changes.items():
        if value is None and name in ("name", "status", "linkages"):
            raise Invalid("This field cannot be cleared.", field=name)
        if name == "linkages":
            value = sorted({Linkage(v).value for v in value})
        setattr(cooperative, name, value)
    if "status" in changes:
        await set_cooperative_listing(
            session, cooperative.id, cooperative.status is CooperativeStatus.active
        )
    await session.flush()
    return cooperative


def ensure_can_manage(actor: User, cooperative: Cooperative) -> None:
    """Its managers, officers of its county, and admins act on a cooperative's members."""
    if actor.role is Role.manager:
        access.ensure_cooperative(actor, cooperative.id)
    else:
        access.ensure_role(actor, Role.admin, Role.officer)
        access.ensure_county(actor, cooperative.county_code)


@dataclass(frozen=True, slots=True)
class NewMember:
    household_id: uuid.UUID
    joined_on: date
    linkages: list[Linkage] = field(default_factory=list)


async def add_member(
    session: AsyncSession, actor: User, cooperative_id: uuid.UUID, data: NewMember
) -> Membership:
    from services.households.service import household_county

    cooperative = await get_cooperative(session, cooperative_id)
    ensure_can_manage(actor, cooperative)
    county = await household_county(session, data.household_id)
    if county is None or county != cooperative.county_code:
        raise Invalid("No such household in this cooperative's county.", field="household_id")
    stmt = (
        insert(Membership)
        .values(
            cooperative_id=cooperative.id,
            household_id=data.household_id,
            county_code=cooperative.county_code,
            joined_on=data.joined_on,
            linkages=sorted({linkage.value for linkage in data.linkages}),
        )
        .on_conflict_do_nothing()
        .returning(Membership)
    )
    membership = (await session.scalars(stmt)).one_or_none()
    if membership is None:
        raise Conflict("This household is already a member.", field="household_id")
    return membership


async def memberships(session: AsyncSession, cooperative_id: uuid.UUID) -> list[Membership]:
    stmt = (
        select(Membership)
        .where(Membership.cooperative_id == cooperative_id, Membership.left_on.is_(None))
        .order_by(Membership.joined_on, Membership.household_id)
    )
    return list((await session.scalars(stmt)).all())


async def current_member_ids(
    session: AsyncSession, cooperative_id: uuid.UUID, household_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    stmt = select(Membership.household_id).where(
        Membership.cooperative_id == cooperative_id,
        Membership.household_id.in_(household_ids),
        Membership.left_on.is_(None),
    )
    return set((await session.scalars(stmt)).all())


async def list_members(
    session: AsyncSession, actor: User, cooperative_id: uuid.UUID
) -> list[tuple[Membership, MemberSummary]]:
    """Current members with what a manager may see of them; reading names is audited."""
    from services.households.service import summaries

    cooperative = await get_cooperative(session, cooperative_id)
    ensure_can_manage(actor, cooperative)
    members = await memberships(session, cooperative.id)
    cards = await summaries(session, [m.household_id for m in members])
    await record(
        session,
        actor,
        "cooperative.members.read",
        "household",
        [str(m.household_id) for m in members],
        cooperative_id=str(cooperative.id),
    )
    return [(m, cards[m.household_id]) for m in members if m.household_id in cards]


async def member_view(
    session: AsyncSession, membership: Membership
) -> tuple[Membership, MemberSummary]:
    from services.households.service import summaries

    cards = await summaries(session, [membership.household_id])
    return membership, cards[membership.household_id]
