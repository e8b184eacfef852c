"""File cards as officers read and write them. ID numbers go in, never come out."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.schemas.common import RequestModel
from app.schemas.regions import RegionCode
from app.schemas.users import Phone

CauseName = Literal[
    "illness",
    "disability",
    "education",
    "disaster",
    "land",
    "water",
    "technology",
    "labour",
    "funds",
    "transport",
    "motivation",
    "other",
]
HouseholdTypeName = Literal["ordinary", "minimum_living", "five_guarantee", "allowance_poor"]
StandardName = Literal["national", "provincial", "municipal"]
StatusName = Literal[
    "registered", "exit_proposed", "exited", "monitored", "returned", "deregistered"
]
Text100 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class MemberIn(RequestModel):
    name: Text100
    id_number: Annotated[str, StringConstraints(strip_whitespace=True, max_length=40)] | None = (
        Field(default=None, description="18-character resident ID; stored only as a keyed hash.")
    )
    sex: Literal["male", "female"]
    relation: Literal[
        "head",
        "spouse",
        "child",
        "child_in_law",
        "grandchild",
        "parent",
        "grandparent",
        "sibling",
        "other",
    ]
    ethnicity: Annotated[str, StringConstraints(max_length=40)] | None = None
    education: Literal[
        "none",
        "preschool",
        "primary",
        "junior_secondary",
        "senior_secondary",
        "vocational",
        "college",
    ]
    in_school: bool = False
    health: Literal["healthy", "chronic_illness", "serious_illness", "disabled"]
    labour: Literal["ordinary", "skilled", "lost", "none"]
    migrant_work_months: int = Field(default=0, ge=0, le=12)
    medical_insurance: bool = False
    pension_insurance: bool = False
    allowance: bool = False


class Guarantees(BaseModel):
    food_clothing: bool = False
    compulsory_education: bool = False
    basic_medical: bool = False
    safe_housing: bool = False
    safe_drinking_water: bool = False


class HouseholdCreate(Guarantees, RequestModel):
    village_code: RegionCode
    address: Annotated[str, StringConstraints(max_length=300)] | None = None
    phone: Phone | None = None
    poor: bool = True
    household_type: HouseholdTypeName = "ordinary"
    standard: StandardName = "national"
    main_cause: CauseName
    other_causes: list[CauseName] = Field(default_factory=list, max_length=2)
    registration_year: int = Field(ge=1978, le=2100)
    members: list[MemberIn] = Field(min_length=1, max_length=30)


class HouseholdPatch(RequestModel):
    address: Annotated[str, StringConstraints(max_length=300)] | None = None
    phone: Phone | None = None
    poor: bool | None = None
    household_type: HouseholdTypeName | None = None
    standard: StandardName | None = None
    main_cause: CauseName | None = None
    other_causes: list[CauseName] | None = Field(default=None, max_length=2)
    food_clothing: bool | None = None
    compulsory_education: bool | None = None
    basic_medical: bool | None = None
    safe_housing: bool | None = None
    safe_drinking_water: bool | None = None


class MemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    id_number_masked: str | None = Field(default=None, description="Only the last four characters.")
    birth_year: int | None
    sex: str
    relation: str
    ethnicity: str | None
    education: str
    in_school: bool
    health: str
    labour: str
    migrant_work_months: int
    medical_insurance: bool
    pension_insurance: bool
    allowance: bool


class CadreOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    unit: str | None
    level: str | None
    phone: str | None
    start_date: date


class HouseholdOut(Guarantees):
    id: uuid.UUID
    county_code: str
    village_code: str
    address: str | None
    phone: str | None
    poor: bool
    household_type: HouseholdTypeName
    standard: StandardName
    main_cause: CauseName
    other_causes: list[CauseName]
    registration_year: int
    status: StatusName
    size: int
    members: list[MemberOut]
    created_at: datetime
    updated_at: datetime


class StatusChangeIn(RequestModel):
    status: StatusName
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class StatusChangeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_status: str | None
    to_status: str
    reason: str
    actor_id: uuid.UUID | None
    changed_at: datetime


class IncomeIn(RequestModel):
    year: int = Field(ge=2000, le=2100)
    kind: Literal["wage", "operating", "transfer", "property", "production_cost"]
    amount_fen: int = Field(ge=0, le=10**13, description="Integer fen (CNY minor units).")
    note: Annotated[str, StringConstraints(max_length=1000)] | None = None


class IncomeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    year: int
    kind: str
    amount_fen: int
    currency: str
    note: str | None
    recorded_by: uuid.UUID | None
    recorded_at: datetime


class CadreIn(RequestModel):
    name: Text100
    unit: Annotated[str, StringConstraints(max_length=200)] | None = None
    level: Annotated[str, StringConstraints(max_length=40)] | None = None
    phone: Phone | None = None
    start_date: date
