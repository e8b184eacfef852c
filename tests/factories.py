"""Small builders for a fictional county: regions, sites, cooperatives, households."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from itertools import count
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.catalog import service as catalog
from services.catalog.models import Product, ProductStatus
from services.cooperatives import service as cooperatives
from services.cooperatives.models import Cooperative, CooperativeKind, Linkage
from services.households import service as households
from services.households.ids import make_id_number
from services.households.models import (
    Cause,
    Education,
    Health,
    Household,
    HouseholdType,
    Labour,
    Relation,
    Sex,
    Standard,
)
from services.regions import service as regions
from services.regions.models import ServiceSite, SiteKind
from services.users.models import User

PII_KEY = b"test-pii-key"
_sequence = count(1)


def credit_code(serial: int) -> str:
    """A valid unified social credit code for fictional organisations."""
    from stdnum.cn import uscc

    body = f"93990102MA{serial:07d}"[:17]
    return body + uscc.calc_check_digit(body)


def id_number(serial: int | None = None, birth: date = date(1980, 5, 17)) -> str:
    return make_id_number("990102", birth, serial if serial is not None else next(_sequence))


@dataclass
class County:
    """Province 99 (fictional), city 9901, county 990102 with two villages; county 990103."""

    province: str = "990000000000"
    city: str = "990100000000"
    county: str = "990102000000"
    township: str = "990102100000"
    village: str = "990102100001"
    village2: str = "990102100002"
    other_county: str = "990103000000"
    other_village: str = "990103100001"


async def build_regions(session: AsyncSession) -> County:
    c = County()
    regions_to_make: list[tuple[str, str, dict[str, Any]]] = [
        (c.province, "示范省", {"western": True}),
        (c.city, "示范市", {}),
        (c.county, "青溪县", {"rural_population": 1000}),
        (c.township, "河田镇", {}),
        (c.village, "上坪村", {"household_count": 300, "rural_population": 1000}),
        (c.village2, "下坪村", {"household_count": 200}),
        (c.other_county, "远山县", {}),
        ("990103100000", "远山镇", {}),
        (c.other_village, "远山村", {}),
    ]
    for code, name, extra in regions_to_make:
        await regions.create_region(session, regions.NewRegion(code=code, name=name, **extra))
    return c


class Builder:
    def __init__(self, session: AsyncSession, admin: User, county: County) -> None:
        self.session = session
        self.admin = admin
        self.county = county

    async def site(self, village: str | None = None) -> ServiceSite:
        return await regions.create_site(
            self.session,
            regions.NewSite(
                village_code=village or self.county.village,
                kind=SiteKind.rural_taobao,
                name="上坪村淘宝服务站",
            ),
        )

    async def cooperative(self, village: str | None = None, **extra: Any) -> Cooperative:
        serial = next(_sequence)
        return await cooperatives.create_cooperative(
            self.session,
            self.admin,
            cooperatives.NewCooperative(
                name=extra.pop("name", f"青溪河田鸡专业合作社{serial}"),
                kind=extra.pop("kind", CooperativeKind.cooperative),
                credit_code=credit_code(serial),
                village_code=village or self.county.village,
                linkages=[Linkage.purchase_order],
                **extra,
            ),
        )

    async def household(
        self, village: str | None = None, *, head: str = "王大山", size: int = 3
    ) -> Household:
        relations = [Relation.head, Relation.spouse, Relation.child, Relation.parent]
        members = [
            households.NewMember(
                name=head if i == 0 else f"{head[0]}家{i}",
                sex=Sex.male if i % 2 == 0 else Sex.female,
                relation=relations[min(i, 3)],
                education=Education.primary,
                health=Health.healthy,
                labour=Labour.ordinary,
                id_number=id_number(),
            )
            for i in range(size)
        ]
        return await households.create_household(
            self.session,
            self.admin,
            households.NewHousehold(
                village_code=village or self.county.village,
                household_type=HouseholdType.ordinary,
                standard=Standard.national,
                main_cause=Cause.illness,
                registration_year=2016,
                members=members,
                safe_housing=True,
            ),
            pii_key=PII_KEY,
            today=date(2026, 11, 23),
        )

    async def member(self, cooperative: Cooperative, household: Household) -> None:
        await cooperatives.add_member(
            self.session,
            self.admin,
            cooperative.id,
            cooperatives.NewMember(household.id, date(2020, 1, 1)),
        )

    async def product(self, cooperative: Cooperative, **fields: Any) -> Product:
        fields.setdefault("status", ProductStatus.active)
        data = catalog.NewProduct(
            title=fields.pop("title", "高山土鸡蛋"),
            category=fields.pop("category", "eggs"),
            unit=fields.pop("unit", "盒"),
            price_fen=fields.pop("price_fen", 3990),
            stock=fields.pop("stock", 100),
            **fields,
        )
        return await catalog.create_product(self.session, self.admin, cooperative.id, data)
