"""Regions and service sites: creation by admins, public reading."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.errors import Conflict, Invalid, NotFound
from services.pagination import Page, keyset_page
from services.regions.codes import Level, code_range, county_of, level_of, parent_of
from services.regions.models import Region, ServiceSite, SiteKind


@dataclass(frozen=True, slots=True)
class NewRegion:
    code: str
    name: str
    level: Level | None = None
    western: bool | None = None
    urban: bool = False
    rural_population: int | None = None
    household_count: int | None = None


async def create_region(session: AsyncSession, data: NewRegion) -> Region:
    level = level_of(data.code)
    if data.level is not None and data.level is not level:
        raise Invalid(
            f"Code {data.code} names a {level.value}, not a {data.level.value}.", field="level"
        )
    parent_code = parent_of(data.code)
    western = data.western
    if parent_code is not None:
        parent = await session.get(Region, parent_code)
        if parent is None:
            raise Invalid(f"The parent region {parent_code} does not exist yet.", field="code")
        if western is None:
            western = parent.western  # a county inherits its province's western flag
    stmt = (
        insert(Region)
        .values(
            code=data.code,
            name=data.name,
            level=level,
            parent_code=parent_code,
            western=bool(western),
            urban=data.urban,
            rural_population=data.rural_population,
            household_count=data.household_count,
        )
        .on_conflict_do_nothing(index_elements=[Region.code])
        .returning(Region)
    )
    region = (await session.scalars(stmt)).one_or_none()
    if region is None:
        raise Conflict(f"Region {data.code} already exists.", field="code")
    return region


async def get_region(session: AsyncSession, code: str) -> Region:
    region = await session.get(Region, code) if len(code) == 12 else None
    if region is None:
        raise NotFound(f"No region {code}.")
    return region


async def require_region(session: AsyncSession, code: str, level: Level, *, field: str) -> Region:
    """A region that must exist at a given level, for other areas' inputs."""
    level_of(code, field=field)
    region = await session.get(Region, code)
    if region is None:
        raise Invalid(f"Region {code} does not exist.", field=field)
    if region.level is not level:
        raise Invalid(f"Region {code} is a {region.level.value}, not a {level.value}.", field=field)
    return region


async def list_regions(
    session: AsyncSession,
    *,
    parent: str | None,
    level: Level | None,
    limit: int,
    cursor: str | None,
) -> Page[Region]:
    stmt = select(Region)
    if parent is not None:
        stmt = stmt.where(Region.parent_code == parent)
    if level is not None:
        stmt = stmt.where(Region.level == level)
    return await keyset_page(
        session, stmt, order=[Region.code], kind="regions", cursor=cursor, limit=limit
    )


@dataclass(frozen=True, slots=True)
class NewSite:
    village_code: str
    kind: SiteKind
    name: str
    address: str | None = None
    phone: str | None = None


async def create_site(session: AsyncSession, data: NewSite) -> ServiceSite:
    await require_region(session, data.village_code, Level.village, field="village_code")
    site = ServiceSite(
        county_code=county_of(data.village_code),
        village_code=data.village_code,
        kind=data.kind,
        name=data.name,
        address=data.address,
        phone=data.phone,
    )
    session.add(site)
    await session.flush()
    return site


async def get_site(session: AsyncSession, site_id: uuid.UUID) -> ServiceSite:
    site = await session.get(ServiceSite, site_id)
    if site is None:
        raise NotFound("No such service site.")
    return site


async def list_sites(
    session: AsyncSession, *, region: str | None, limit: int, cursor: str | None
) -> Page[ServiceSite]:
    stmt = select(ServiceSite).where(ServiceSite.active.is_(True))
    if region is not None:
        low, high = code_range(region)
        stmt = stmt.where(ServiceSite.village_code.between(low, high))
    return await keyset_page(
        session,
        stmt,
        order=[ServiceSite.village_code, ServiceSite.id],
        kind="sites",
        cursor=cursor,
        limit=limit,
    )
