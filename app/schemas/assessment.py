"""Thresholds by year and household-year rows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Reason = Literal[
    "no_members",
    "income",
    "food_clothing",
    "compulsory_education",
    "basic_medical",
    "safe_housing",
    "safe_drinking_water",
]
MonitoringReason = Literal["under_monitoring_line", "income_drop"]


class ThresholdsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    poverty_line_yuan: int = Field(gt=0, le=10_000_000, description="Per person per year.")
    monitoring_line_yuan: int = Field(
        gt=0, le=10_000_000, description="Per person per year; not below the poverty line."
    )
    income_drop_bp: int = Field(
        default=3_000,
        ge=1,
        le=10_000,
        description="Monitoring flags a fall of per-capita income from the year before "
        "beyond this share.",
    )
    exit_incidence_bp: int = Field(
        default=200, ge=0, le=10_000, description="Village and county exit: incidence below this."
    )
    western_exit_incidence_bp: int = Field(
        default=300, ge=0, le=10_000, description="The same in the western region."
    )
    taobao_sales_yuan: int = Field(
        default=10_000_000, ge=0, le=10**15, description="Taobao village: yearly sales at least."
    )
    taobao_active_stores: int = Field(
        default=100, ge=0, le=10_000_000, description="... and this many active stores,"
    )
    taobao_store_share_bp: int = Field(
        default=1_000,
        ge=0,
        le=10_000,
        description="... or active stores in this share of households.",
    )
    source: str | None = Field(default=None, max_length=500, description="Where they come from.")


class ThresholdsOut(ThresholdsIn):
    model_config = ConfigDict(from_attributes=True)

    year: int
    updated_by: uuid.UUID | None
    updated_at: datetime


class ThresholdEditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    year: int
    before: dict[str, Any] | None
    after: dict[str, Any]
    edited_by: uuid.UUID | None
    edited_at: datetime


class HouseholdYearOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    household_id: uuid.UUID
    county_code: str
    village_code: str
    head_name: str | None
    poor: bool
    status: str
    year: int
    size: int
    ledger_income_fen: int = Field(description="Ledger income counted in assessment this year.")
    ledger_left_out_fen: int = Field(description="Ledger income held back by flags.")
    other_income_fen: int = Field(description="Recorded other income, net of production costs.")
    total_income_fen: int
    per_capita_fen: int | None = Field(description="Whole fen, rounded down; none without members.")
    poverty_line_fen: int
    monitoring_line_fen: int
    previous_per_capita_fen: int | None = Field(
        description="The year before, when anything was recorded for it."
    )
    exit_eligible: bool
    failing: list[Reason] = Field(description="Every reason it is not exit-eligible.")
    monitoring: bool
    monitoring_reasons: list[MonitoringReason]
    food_clothing: bool
    compulsory_education: bool
    basic_medical: bool
    safe_housing: bool
    safe_drinking_water: bool
