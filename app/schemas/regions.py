"""Regions and service sites."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.schemas.common import RequestModel
from app.schemas.users import Phone

RegionCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{12}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
LevelName = Literal["province", "city", "county", "township", "village"]
SiteKindName = Literal["rural_taobao", "postal", "supply_marketing"]


class RegionCreate(RequestModel):
    code: RegionCode = Field(description="12-digit statistical division code.")
    name: Name
    level: LevelName | None = Field(default=None, description="Checked against the code.")
    western: bool | None = Field(default=None, description="Inherited from the parent if unset.")
    urban: bool = False
    rural_population: int | None = Field(default=None, ge=0, le=2_000_000_000)
    household_count: int | None = Field(default=None, ge=0, le=2_000_000_000)


class RegionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    name: str
    level: LevelName
    parent_code: str | None
    western: bool
    urban: bool
    rural_population: int | None
    household_count: int | None


class SiteCreate(RequestModel):
    village_code: RegionCode
    kind: SiteKindName
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    address: Annotated[str, StringConstraints(max_length=300)] | None = None
    phone: Phone | None = None


class SiteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    village_code: str
    county_code: str
    kind: SiteKindName
    name: str
    address: str | None
    phone: str | None
