"""Exit proposals, their objections and decisions, and the monitoring sweep."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.schemas.assessment import MonitoringReason
from app.schemas.common import RequestModel
from app.schemas.regions import RegionCode

ProposalStatusName = Literal["open", "approved", "rejected"]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Year = Annotated[int, Field(ge=2000, le=2100, description="Assessment year.")]


class ProposalIn(RequestModel):
    year: Year = Field(
        description="The assessment year whose household-year row the exit rests on."
    )
    reason: Reason = Field(description="Why the household is proposed; kept in its status history.")


class ObjectionIn(RequestModel):
    objector: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = Field(
        default=None, description="Who objects, as they chose to be named; omit if anonymous."
    )
    text: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)
    ] = Field(description="The objection.")


class DecisionIn(RequestModel):
    decision: Literal["approve", "reject"] = Field(
        description="approve: the household exits; reject: it is registered (poor) again."
    )
    reason: Reason = Field(description="Why; kept with the proposal and in the status history.")


class ObjectionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    proposal_id: uuid.UUID
    objector: str | None
    text: str
    recorded_by: uuid.UUID
    recorded_at: datetime


class ProposalOut(BaseModel):
    id: uuid.UUID
    household_id: uuid.UUID
    county_code: str
    year: int
    status: ProposalStatusName = Field(
        description="open: in public notice, then waiting for a decision; approved; rejected."
    )
    reason: str
    evidence: dict[str, Any] = Field(
        description="The household-year row the proposal was made on, without personal data "
        "(the fields of GET /v1/assessment/households except head_name)."
    )
    from_status: str = Field(description="The household's status before the proposal.")
    proposed_by: uuid.UUID
    notice_starts_at: datetime
    notice_ends_at: datetime = Field(
        description="Objections are taken before it; a decision only from it on."
    )
    objection_count: int
    decided_by: uuid.UUID | None
    decided_at: datetime | None
    decision_reason: str | None
    created_at: datetime


class ProposalDetailOut(ProposalOut):
    objections: list[ObjectionOut] = Field(description="Oldest first.")


class MonitoringIn(RequestModel):
    region: RegionCode = Field(description="Any level; officers: within their county.")
    year: Year


class MonitoredOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    household_id: uuid.UUID
    village_code: str
    per_capita_fen: int | None
    monitoring_line_fen: int
    previous_per_capita_fen: int | None
    monitoring_reasons: list[MonitoringReason]


class MonitoringOut(BaseModel):
    region: str
    year: int
    moved: list[MonitoredOut] = Field(
        description="The exited households moved to monitored by this sweep, with the reasons."
    )
