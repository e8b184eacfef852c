"""A household's ledger statement as officers read it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class FlagMarkOut(BaseModel):
    id: uuid.UUID
    rule: str
    status: Literal["open", "counted", "excluded"]


class IncomeEntryOut(BaseModel):
    id: int
    kind: Literal["recognition", "adjustment"]
    amount_fen: int = Field(description="Negative for a refund after recognition.")
    currency: str
    effective_at: datetime = Field(description="Delivery (cash: collection), or the refund.")
    order_id: uuid.UUID
    line_id: uuid.UUID
    product_id: uuid.UUID
    title: str
    unit: str
    refund_id: uuid.UUID | None
    counted: bool = Field(description="False while a flag holds it back from assessment.")
    flags: list[FlagMarkOut]


class IncomeTotalsOut(BaseModel):
    currency: str
    recognised_fen: int
    counted_fen: int
    left_out_fen: int = Field(description="Held back by open or excluding flags.")


class IncomeStatementOut(BaseModel):
    household_id: uuid.UUID
    year: int
    totals: list[IncomeTotalsOut] = Field(description="Over the whole year, per currency.")
    items: list[IncomeEntryOut] = Field(description="This page of the year's entries.")
    next_cursor: str | None
