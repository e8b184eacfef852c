"""A household's ledger income statement, for the officers of its county."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.deps import Cursor, Limit, SessionDep, now, require
from app.schemas.income import FlagMarkOut, IncomeEntryOut, IncomeStatementOut, IncomeTotalsOut
from app.schemas.problem import problem_responses
from services.ledger import statements
from services.ledger.service import assessment_year
from services.users.models import Role, User

router = APIRouter(prefix="/v1", tags=["attribution"])
Officer = Annotated[User, Depends(require(Role.officer, Role.admin))]


@router.get(
    "/households/{household_id}/income",
    response_model=IncomeStatementOut,
    responses=problem_responses(401, 403, 404, 422),
)
async def household_income(
    session: SessionDep,
    actor: Officer,
    household_id: uuid.UUID,
    year: Annotated[
        int | None, Query(ge=2000, le=2100, description="Assessment year; default: this year.")
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> IncomeStatementOut:
    """Every entry of the year with its order line, product, date and any flag."""
    statement = await statements.household_income(
        session,
        actor,
        household_id,
        year=year or assessment_year(now()),
        limit=limit,
        cursor=cursor,
    )
    return IncomeStatementOut(
        household_id=statement.household_id,
        year=statement.year,
        totals=[
            IncomeTotalsOut(
                currency=t.currency,
                recognised_fen=t.recognised_fen,
                counted_fen=t.counted_fen,
                left_out_fen=t.left_out_fen,
            )
            for t in statement.totals
        ],
        items=[
            IncomeEntryOut(
                id=line.entry.id,
                kind=line.entry.kind.value,
                amount_fen=line.entry.amount_fen,
                currency=line.entry.currency,
                effective_at=line.entry.effective_at,
                order_id=line.entry.order_id,
                line_id=line.entry.line_id,
                product_id=line.entry.product_id,
                title=line.title,
                unit=line.unit,
                refund_id=line.entry.refund_id,
                counted=line.counted,
                flags=[FlagMarkOut(id=f.id, rule=f.rule, status=f.status) for f in line.flags],
            )
            for line in statement.page.items
        ],
        next_cursor=statement.page.next_cursor,
    )
