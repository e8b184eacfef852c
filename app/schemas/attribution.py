"""Flags on attributed income and officers' rulings, as the API reads and writes them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from app.schemas.common import RequestModel

FlagRuleName = Literal[
    "supplier_household", "cooperative_insider", "dominant_buyer", "pre_assessment_spike"
]
FlagStatusName = Literal["open", "counted", "excluded", "withdrawn"]


class FlagOut(BaseModel):
    id: uuid.UUID
    rule: FlagRuleName = Field(
        description="supplier_household: the buyer shares a phone, address or member's name "
        "with a supplying household; cooperative_insider: with a manager, the contact or a "
        "member household of the selling cooperative; dominant_buyer: one buyer gives more "
        "than the configured share of a household's year; pre_assessment_spike: a household's "
        "income jumps in the weeks before the assessment date."
    )
    status: FlagStatusName = Field(
        description="open: left out of assessment until ruled; counted; excluded; withdrawn: "
        "an anomaly rule (dominant_buyer, pre_assessment_spike) found its condition no longer "
        "held before anyone ruled, so the income counts (the rule opens the flag again if the "
        "condition comes back)."
    )
    county_code: str
    order_id: uuid.UUID | None = Field(description="The purchase, for self-dealing flags.")
    buyer_id: uuid.UUID | None
    household_id: uuid.UUID | None = Field(
        description="The household concerned (for cooperative_insider: a matched member, if any)."
    )
    cooperative_id: uuid.UUID | None
    year: int | None = Field(description="Assessment year of the income held back.")
    detail: dict[str, Any] = Field(
        description="What fired the rule: the fields that matched (phones masked to the last "
        "four digits) or the figures of an anomaly, in fen."
    )
    lines: int = Field(description="Order lines whose households' parts the flag holds back.")
    created_at: datetime
    ruled_by: uuid.UUID | None = Field(
        description="Who gave the latest ruling; none, with ruled_at set: the flag's own rule "
        "withdrew it or opened it again."
    )
    ruled_at: datetime | None
    ruling_reason: str | None


class RulingIn(RequestModel):
    ruling: Literal["counted", "excluded"] = Field(
        description="counted: the income enters assessment; excluded: it stays out."
    )
    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)
    ] = Field(description="Why; kept with the ruling in the flag's history.")
