"""Producer organisations and member households."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.schemas.common import RequestModel
from app.schemas.regions import RegionCode
from app.schemas.users import Phone

KindName = Literal["cooperative", "household_shop", "enterprise"]
LinkageName = Literal["purchase_order", "employment", "dividend", "land_lease"]


class CooperativeCreate(RequestModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    kind: KindName
    credit_code: Annotated[str, StringConstraints(strip_whitespace=True, max_length=40)] = Field(
        description="Unified social credit code (18 characters, with its check character)."
    )
    village_code: RegionCode
    linkages: list[LinkageName] = Field(default_factory=list, max_length=4)
    description: Annotated[str, StringConstraints(max_length=4000)] | None = None
    contact_phone: Phone | None = None


class CooperativePatch(RequestModel):
    name: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = None
    status: Literal["active", "suspended", "closed"] | None = None
    linkages: list[LinkageName] | None = Field(default=None, max_length=4)
    description: Annotated[str, StringConstraints(max_length=4000)] | None = None
    contact_phone: Phone | None = None


class CooperativeOut(BaseModel):
    """Public facts about a producer organisation."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    kind: KindName
    credit_code: str
    village_code: str
    county_code: str
    status: Literal["active", "suspended", "closed"]
    linkages: list[LinkageName]
    description: str | None
    created_at: datetime


class MemberCreate(RequestModel):
    household_id: uuid.UUID
    joined_on: date
    linkages: list[LinkageName] = Field(default_factory=list, max_length=4)


class MemberOut(BaseModel):
    """A member household as its cooperative sees it: no ID data."""

    household_id: uuid.UUID
    head_name: str
    village_code: str
    poor: bool
    status: str
    size: int
    joined_on: date
    linkages: list[LinkageName]
