"""Regions (a reference table) and village service sites."""

from __future__ import annotations

import enum

from sqlalchemy import CHAR, CheckConstraint, Enum, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, Timestamps, UUIDPrimaryKey
from services.regions.codes import Level


class Region(Timestamps, Base):
    __tablename__ = "regions"
    __table_args__ = (
        CheckConstraint("code ~ '^[0-9]{12}$'", name="code_is_12_digits"),
        Index("ix_regions_parent_code", "parent_code"),
    )

    code: Mapped[str] = mapped_column(CHAR(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    level: Mapped[Level] = mapped_column(
        Enum(Level, name="region_level", native_enum=False, create_constraint=True, length=10)
    )
    parent_code: Mapped[str | None] = mapped_column(CHAR(12), ForeignKey("regions.code"))
    western: Mapped[bool] = mapped_column(default=False, server_default="false")
    urban: Mapped[bool] = mapped_column(
        default=False,
        server_default="false",
        comment="An urban residents' committee rather than an administrative village.",
    )
    rural_population: Mapped[int | None] = mapped_column(comment="Persons, for incidence.")
    household_count: Mapped[int | None] = mapped_column(
        comment="All households of a village, poor or not (Taobao-village test)."
    )


class SiteKind(enum.StrEnum):
    rural_taobao = "rural_taobao"
    postal = "postal"
    supply_marketing = "supply_marketing"


class ServiceSite(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "service_sites"
    __table_args__ = (Index("ix_service_sites_village_code", "village_code"),)

    county_code: Mapped[str] = mapped_column(CHAR(12), index=True)
    village_code: Mapped[str] = mapped_column(CHAR(12), ForeignKey("regions.code"))
    kind: Mapped[SiteKind] = mapped_column(
        Enum(SiteKind, name="site_kind", native_enum=False, create_constraint=True, length=20)
    )
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(300))
    phone: Mapped[str | None] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(default=True, server_default="true")
