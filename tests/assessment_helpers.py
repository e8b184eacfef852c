"""Setup for assessment tests: thresholds, recorded incomes, household-year rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from services.households.models import Household
from services.ledger.service import assessment_year
from services.users.models import Role, User

# The year ledger entries made now fall in (China time).
THIS_YEAR = assessment_year(datetime.now(UTC))


async def set_thresholds(
    client: httpx.AsyncClient,
    users: Any,
    year: int = THIS_YEAR,
    *,
    line: int = 100,
    monitoring: int = 150,
    **figures: Any,
) -> dict[str, Any]:
    """Small lines (yuan per person per year) so that a few sales cross them."""
    admin = await users.make(Role.admin)
    response = await client.put(
        f"/v1/assessment/thresholds/{year}",
        json={"poverty_line_yuan": line, "monitoring_line_yuan": monitoring, **figures},
        headers=users.auth(admin),
    )
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def add_income(
    client: httpx.AsyncClient,
    users: Any,
    household: Household,
    amount_fen: int,
    *,
    year: int = THIS_YEAR,
    kind: str = "wage",
) -> None:
    officer = await users.make(Role.officer)
    response = await client.post(
        f"/v1/households/{household.id}/incomes",
        json={"year": year, "kind": kind, "amount_fen": amount_fen},
        headers=users.auth(officer),
    )
    assert response.status_code == 201, response.text


async def household_rows(
    client: httpx.AsyncClient,
    users: Any,
    region: str,
    *,
    year: int = THIS_YEAR,
    actor: User | None = None,
    **params: Any,
) -> httpx.Response:
    actor = actor or await users.make(Role.officer)
    return await client.get(
        "/v1/assessment/households",
        params={"region": region, "year": year, **params},
        headers=users.auth(actor),
    )


async def row_of(
    client: httpx.AsyncClient, users: Any, household: Household, *, year: int = THIS_YEAR
) -> dict[str, Any]:
    """The household-year row of one household (its village, all pages walked)."""
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        response = await household_rows(client, users, household.village_code, year=year, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        for item in body["items"]:
            if item["household_id"] == str(household.id):
                row: dict[str, Any] = item
                return row
        cursor = body["next_cursor"]
        if cursor is None:
            raise AssertionError(f"no row for household {household.id}")
