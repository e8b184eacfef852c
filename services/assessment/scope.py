"""Which households a region question covers, and who may ask it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from services.errors import NotFound
from services.regions.codes import Level, code_range, county_of, level_of
from services.regions.models import Region
from services.users import access
from services.users.models import Role, User


@dataclass(frozen=True, slots=True)
class Scope:
    """A region as ranges over the county and village codes that producer tables carry.

    County-level questions and below name one county, so that they stay on one
    shard when tables are distributed by county code; provinces and cities range
    over counties.
    """

    region: Region
    county_low: str
    county_high: str
    village_low: str
    village_high: str

    @property
    def level(self) -> Level:
        return self.region.level

    @property
    def code(self) -> str:
        return self.region.code

    @property
    def params(self) -> dict[str, str]:
        return {
            "county_low": self.county_low,
            "county_high": self.county_high,
            "village_low": self.village_low,
            "village_high": self.village_high,
        }


def sql_filter(alias: str, *, village_column: str | None = "village_code") -> str:
    """The SQL condition putting `alias`'s rows inside the scope (binds of `Scope.params`).

    `village_column` None: the table carries only a county code (ledger entries, incomes).
    """
    county = (
        f"{alias}.county_code BETWEEN CAST(:county_low AS char(12)) "
        "AND CAST(:county_high AS char(12))"
    )
    if village_column is None:
        return county
    village = (
        f"{alias}.{village_column} BETWEEN CAST(:village_low AS char(12)) "
        "AND CAST(:village_high AS char(12))"
    )
    return f"{county} AND {village}"


async def scope_of(session: AsyncSession, actor: User, region_code: str) -> Scope:
    """The scope of a region the actor may assess: officers their county and below, admins all.

    A region outside an officer's county is Forbidden; one that does not exist, NotFound.
    """
    access.ensure_role(actor, Role.admin, Role.officer)
    level = level_of(region_code, field="region")
    # A province or city never equals an officer's county: only admins ask at that level.
    access.ensure_county(actor, region_code)
    region = await session.get(Region, region_code)
    if region is None:
        raise NotFound(f"Region {region_code} does not exist.", field="region")
    low, high = code_range(region_code)
    if level in (Level.province, Level.city):
        return Scope(region, low, high, low, high)
    county = county_of(region_code)
    return Scope(region, county, county, low, high)
