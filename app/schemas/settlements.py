"""A cooperative's settlements: what it and each member household earned, by period."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PayoutStateName = Literal["held", "payable", "pending", "transferred", "failed"]


class PeriodOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    label: str = Field(description="`YYYY-MM` for a month, else `from/to` (ISO dates).")
    from_: date = Field(alias="from", description="First day, China time (UTC+8).")
    to: date = Field(description="Last day (inclusive), China time (UTC+8).")


class PayoutSumOut(BaseModel):
    count: int
    amount_fen: int


class SettlementTotalsOut(BaseModel):
    """One currency. To the fen: net = households + cooperative = gross - fees - refunds."""

    currency: str
    fulfilments: int = Field(description="Fulfilments delivered and paid in the period.")
    lines: int
    gross_fen: int = Field(description="Price x quantity of those fulfilments' lines.")
    fees_fen: int = Field(description="Platform fee charged on those lines.")
    refunds_fen: int = Field(
        description="What refunds took from the net in the period (before and after "
        "delivery); the platform gives back its share of the fee with each refund."
    )
    refunds_before_delivery_fen: int = Field(
        description="Refunds on this period's lines made before they were delivered."
    )
    refunds_after_delivery_fen: int = Field(
        description="Refunds dated in the period on lines delivered earlier or now."
    )
    net_fen: int = Field(description="Every ledger entry of the cooperative dated in the period.")
    households_fen: int = Field(description="Member households' part of the net.")
    cooperative_fen: int = Field(description="The cooperative's own part of the net.")
    refunded_after_settlement_fen: int = Field(
        description="Zero or negative: refunds dated in the period on fulfilments whose "
        "payout was already made or is owed at its recorded amount; to be taken back."
    )
    payouts: dict[PayoutStateName, PayoutSumOut] = Field(
        description="Payouts of the fulfilments delivered in the period, by state; `held` "
        "are disputes on hold."
    )


class HouseholdEarningOut(BaseModel):
    household_id: uuid.UUID
    head_name: str | None = Field(
        description="Head of household, for current members (as the member list shows)."
    )
    currency: str
    recognised_fen: int = Field(description="Its part of the lines delivered in the period.")
    adjustments_fen: int = Field(description="Refunds (negative) dated in the period.")
    earned_fen: int


class SettlementOut(BaseModel):
    cooperative_id: uuid.UUID
    period: PeriodOut
    totals: list[SettlementTotalsOut]
    households: list[HouseholdEarningOut]


class MonthTotalsOut(BaseModel):
    currency: str
    recognised_fen: int
    adjustments_fen: int
    net_fen: int
    households_fen: int
    cooperative_fen: int


class SettlementMonthOut(BaseModel):
    month: str = Field(description="YYYY-MM, China time (UTC+8).")
    totals: list[MonthTotalsOut]


class SettlementMonthsOut(BaseModel):
    """Months with ledger entries, newest first; a page spans `limit` calendar months."""

    items: list[SettlementMonthOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for older months; null when there are none."
    )
