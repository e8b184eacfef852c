"""A cooperative's settlements, for its managers (and admins)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.deps import Cursor, SessionDep, require
from app.schemas.problem import problem_responses
from app.schemas.settlements import (
    HouseholdEarningOut,
    MonthTotalsOut,
    PayoutSumOut,
    PeriodOut,
    SettlementMonthOut,
    SettlementMonthsOut,
    SettlementOut,
    SettlementTotalsOut,
)
from services.errors import Invalid
from services.ledger import settlements
from services.ledger.models import PayoutState
from services.pagination import Page
from services.users.models import Role, User

router = APIRouter(prefix="/v1", tags=["settlements"])
Reader = Annotated[User, Depends(require(Role.manager, Role.admin))]


def settlement_out(report: settlements.Settlement) -> SettlementOut:
    return SettlementOut(
        cooperative_id=report.cooperative_id,
        period=PeriodOut(
            label=report.period.label, from_=report.period.first, to=report.period.last
        ),
        totals=[
            SettlementTotalsOut(
                currency=t.currency,
                fulfilments=t.fulfilments,
                lines=t.lines,
                gross_fen=t.gross_fen,
                fees_fen=t.fees_fen,
                refunds_fen=t.refunds_fen,
                refunds_before_delivery_fen=t.refunds_before_delivery_fen,
                refunds_after_delivery_fen=t.refunds_after_delivery_fen,
                net_fen=t.net_fen,
                households_fen=t.households_fen,
                cooperative_fen=t.cooperative_fen,
                refunded_after_settlement_fen=t.refunded_after_settlement_fen,
                payouts={
                    state.value: PayoutSumOut(
                        count=t.payouts.get(state, settlements.PayoutSum()).count,
                        amount_fen=t.payouts.get(state, settlements.PayoutSum()).amount_fen,
                    )
                    for state in PayoutState
                },
            )
            for t in report.totals
        ],
        households=[
            HouseholdEarningOut(
                household_id=h.household_id,
                head_name=h.head_name,
                currency=h.currency,
                recognised_fen=h.recognised_fen,
                adjustments_fen=h.adjustments_fen,
                earned_fen=h.earned_fen,
            )
            for h in report.households
        ],
    )


def months_out(page: Page[settlements.SettlementMonth]) -> SettlementMonthsOut:
    return SettlementMonthsOut(
        items=[
            SettlementMonthOut(
                month=m.month,
                totals=[
                    MonthTotalsOut(
                        currency=t.currency,
                        recognised_fen=t.recognised_fen,
                        adjustments_fen=t.adjustments_fen,
                        net_fen=t.net_fen,
                        households_fen=t.households_fen,
                        cooperative_fen=t.cooperative_fen,
                    )
                    for t in m.totals
                ],
            )
            for m in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/cooperatives/{cooperative_id}/settlements",
    response_model=SettlementOut | SettlementMonthsOut,
    responses=problem_responses(401, 403, 404, 422),
)
async def cooperative_settlements(
    session: SessionDep,
    actor: Reader,
    cooperative_id: uuid.UUID,
    period: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9]{4}-[0-9]{2}$",
            description="A month, YYYY-MM (China time): the settlement report of that month.",
        ),
    ] = None,
    first: Annotated[
        date | None,
        Query(alias="from", description="With `to`: the report of these days (inclusive)."),
    ] = None,
    last: Annotated[date | None, Query(alias="to")] = None,
    limit: Annotated[
        int, Query(ge=1, le=120, description="Without a period: calendar months per page.")
    ] = 24,
    cursor: Cursor = None,
) -> SettlementOut | SettlementMonthsOut:
    """With `period` (or `from` and `to`): what the cooperative and each household earned,
    fees, refunds and payouts. Without: the months that have entries, with their totals."""
    if period is not None and (first is not None or last is not None):
        raise Invalid("Give either `period` or `from` and `to`.", field="period")
    if (first is None) != (last is None):
        raise Invalid("`from` and `to` go together.", field="to" if last is None else "from")
    if period is not None:
        chosen = settlements.Period.month(period)
    elif first is not None and last is not None:
        chosen = settlements.Period.between(first, last)
    else:
        page = await settlements.settlement_months(
            session, actor, cooperative_id, limit=limit, cursor=cursor
        )
        return months_out(page)
    return settlement_out(
        await settlements.settlement(session, actor, cooperative_id, period=chosen)
    )
