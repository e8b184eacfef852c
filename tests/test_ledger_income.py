"""The household income statement: entries with their lines, what counts, who may read it."""

from __future__ import annotations

import uuid

from sqlalchemy.dialects.postgresql import insert

from services.ledger.models import AttributionFlag, FlagLine, FlagRule, FlagStatus
from services.users.models import Role
from tests.ledger_helpers import delivered_cod_order, recognise, supplied_product


async def statement(client, users, officer, household_id, **params):
    return await client.get(
        f"/v1/households/{household_id}/income", params=params, headers=users.auth(officer)
    )


async def test_the_statement_lists_each_entry_with_its_line_and_totals(
    client, users, world, session
) -> None:
    coop = await world.cooperative()
    a, b = await world.household(), await world.household()
    eggs = await supplied_product(world, coop, [(a, 6000), (b, 2000)], price_fen=3000)
    first = await delivered_cod_order(client, users, [(eggs, 2)])
    second = await delivered_cod_order(client, users, [(eggs, 1)])
    await recognise(session, first)
    await recognise(session, second)
    officer = await users.make(Role.officer)
    response = await statement(client, users, officer, a.id)
    assert response.status_code == 200, response.text
    body = response.json()
    # 6,000 and 3,000 gross, 5 % fee: 5,700 and 2,850 net; 60 % of each.
    assert [item["amount_fen"] for item in body["items"]] == [3_420, 1_710]
    assert {item["order_id"] for item in body["items"]} == {first["id"], second["id"]}
    assert all(item["title"] == eggs.title and item["counted"] for item in body["items"])
    assert body["totals"] == [
        {"currency": "CNY", "recognised_fen": 5_130, "counted_fen": 5_130, "left_out_fen": 0}
    ]
    page = await statement(client, users, officer, a.id, limit=1)
    assert len(page.json()["items"]) == 1
    rest = await statement(client, users, officer, a.id, limit=1, cursor=page.json()["next_cursor"])
    assert rest.json()["items"][0]["id"] != page.json()["items"][0]["id"]
    assert (await statement(client, users, officer, a.id, year=2020)).json()["items"] == []


async def test_a_flagged_entry_is_shown_and_left_out_until_counted(
    client, users, world, session
) -> None:
    coop = await world.cooperative()
    a = await world.household()
    eggs = await supplied_product(world, coop, [(a, 10_000)], price_fen=1_000)
    order = await delivered_cod_order(client, users, [(eggs, 1)])
    await recognise(session, order)
    line_id = uuid.UUID(order["fulfilments"][0]["lines"][0]["id"])
    flag = AttributionFlag(
        id=uuid.uuid4(),
        county_code=world.county.county,
        rule=FlagRule.supplier_household,
        dedupe_key=f"test:{line_id}",
        order_id=uuid.UUID(order["id"]),
        household_id=a.id,
        detail={"matched": "phone"},
    )
    session.add(flag)
    await session.flush()
    await session.execute(
        insert(FlagLine).values(flag_id=flag.id, line_id=line_id, household_id=a.id)
    )
    officer = await users.make(Role.officer)
    body = (await statement(client, users, officer, a.id)).json()
    assert body["items"][0]["counted"] is False
    assert body["items"][0]["flags"] == [
        {"id": str(flag.id), "rule": "supplier_household", "status": "open"}
    ]
    assert body["totals"][0]["left_out_fen"] == 950
    flag.status = FlagStatus.counted
    await session.flush()
    body = (await statement(client, users, officer, a.id)).json()
    assert body["items"][0]["counted"] is True
    assert body["totals"][0]["counted_fen"] == 950


async def test_only_officers_of_the_county_read_a_statement(client, users, world) -> None:
    a = await world.household()
    stranger = await users.make(Role.officer, county_code="990103000000")
    assert (await statement(client, users, stranger, a.id)).status_code == 404
    for role in (Role.buyer, Role.manager):
        assert (await statement(client, users, await users.make(role), a.id)).status_code == 403
