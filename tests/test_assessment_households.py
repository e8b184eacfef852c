"""Thresholds by year and household-year rows: income counted, per capita, exit and monitoring."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from services.households.service import GUARANTEES
from services.ledger import flags
from services.ledger.flags import FlagPolicy
from services.ledger.models import AttributionFlag
from services.users.models import Role
from tests.assessment_helpers import (
    THIS_YEAR,
    add_income,
    household_rows,
    row_of,
    set_thresholds,
)
from tests.ledger_helpers import delivered_cod_order, recognise, supplied_product
from tests.test_ledger import refund

ALL_GUARANTEES = dict.fromkeys(GUARANTEES, True)


async def guarantee(client, users, household, **values: bool) -> None:
    officer = await users.make(Role.officer)
    response = await client.patch(
        f"/v1/households/{household.id}",
        json=ALL_GUARANTEES | values,
        headers=users.auth(officer),
    )
    assert response.status_code == 200, response.text


# --- thresholds ---------------------------------------------------------------------------


async def test_officers_read_the_seeded_lines_of_2020(client, users) -> None:
    officer = await users.make(Role.officer)
    response = await client.get("/v1/assessment/thresholds/2020", headers=users.auth(officer))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["poverty_line_yuan"], body["monitoring_line_yuan"]) == (4000, 6000)
    assert (body["exit_incidence_bp"], body["western_exit_incidence_bp"]) == (200, 300)


async def test_a_year_without_thresholds_is_a_clear_not_found(client, users) -> None:
    officer = await users.make(Role.officer)
    response = await client.get("/v1/assessment/thresholds/2031", headers=users.auth(officer))
    assert response.status_code == 404
    assert "PUT /v1/assessment/thresholds/2031" in response.json()["detail"]


async def test_admins_set_thresholds_and_every_edit_is_kept(client, users) -> None:
    admin = await users.make(Role.admin)
    first = await client.put(
        "/v1/assessment/thresholds/2031",
        json={"poverty_line_yuan": 5000, "monitoring_line_yuan": 9000},
        headers=users.auth(admin),
    )
    assert first.status_code == 201, first.text
    again = await client.put(
        "/v1/assessment/thresholds/2031",
        json={"poverty_line_yuan": 5000, "monitoring_line_yuan": 9000},
        headers=users.auth(admin),
    )
    assert again.status_code == 200  # the same figures: no new edit
    changed = await client.put(
        "/v1/assessment/thresholds/2031",
        json={"poverty_line_yuan": 5200, "monitoring_line_yuan": 9000, "source": "province"},
        headers=users.auth(admin),
    )
    assert changed.status_code == 200 and changed.json()["poverty_line_yuan"] == 5200
    officer = await users.make(Role.officer)
    history = await client.get(
        "/v1/assessment/thresholds/2031/history", headers=users.auth(officer)
    )
    edits = history.json()
    assert [e["before"] and e["before"]["poverty_line_yuan"] for e in edits] == [None, 5000]
    assert [e["after"]["poverty_line_yuan"] for e in edits] == [5000, 5200]
    assert all(e["edited_by"] == str(admin.id) for e in edits)


async def test_officers_cannot_edit_thresholds(client, users) -> None:
    officer = await users.make(Role.officer)
    response = await client.put(
        "/v1/assessment/thresholds/2031",
        json={"poverty_line_yuan": 5000, "monitoring_line_yuan": 9000},
        headers=users.auth(officer),
    )
    assert response.status_code == 403


async def test_a_monitoring_line_below_the_poverty_line_is_refused(client, users) -> None:
    admin = await users.make(Role.admin)
    response = await client.put(
        "/v1/assessment/thresholds/2031",
        json={"poverty_line_yuan": 5000, "monitoring_line_yuan": 4000},
        headers=users.auth(admin),
    )
    assert response.status_code == 422
    assert response.json()["field"] == "monitoring_line_yuan"


# --- household-year rows -------------------------------------------------------------------


async def test_a_household_above_the_line_but_without_a_guarantee_is_not_eligible(
    client, users, world
) -> None:
    await set_thresholds(client, users, line=100)
    household = await world.household(size=2)
    await guarantee(client, users, household, safe_drinking_water=False)
    await add_income(client, users, household, 30_000)  # 150 yuan a head
    row = await row_of(client, users, household)
    assert (row["total_income_fen"], row["per_capita_fen"]) == (30_000, 15_000)
    assert row["poverty_line_fen"] == 10_000
    assert row["exit_eligible"] is False
    assert row["failing"] == ["safe_drinking_water"]

    await guarantee(client, users, household)
    row = await row_of(client, users, household)
    assert row["exit_eligible"] is True and row["failing"] == []


async def test_each_failing_reason_is_named(client, users, world) -> None:
    await set_thresholds(client, users, line=100)
    household = await world.household(size=3)  # only safe housing holds
    await add_income(client, users, household, 29_000)
    row = await row_of(client, users, household)
    assert row["per_capita_fen"] == 9_666
    assert row["failing"] == [
        "income",
        "food_clothing",
        "compulsory_education",
        "basic_medical",
        "safe_drinking_water",
    ]


async def test_ledger_income_and_other_income_net_of_costs_make_the_total(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, line=100)
    coop = await world.cooperative()
    household = await world.household(size=2)
    eggs = await supplied_product(world, coop, [(household, 10_000)], price_fen=10_000)
    order = await delivered_cod_order(client, users, [(eggs, 2)])
    await recognise(session, order)
    await add_income(client, users, household, 5_000, kind="operating")
    await add_income(client, users, household, 1_000, kind="production_cost")
    await add_income(client, users, household, 7_000, year=THIS_YEAR - 1)
    row = await row_of(client, users, household)
    # 20,000 gross, 5 % fee: 19,000 to the household; 5,000 - 1,000 recorded.
    assert row["ledger_income_fen"] == 19_000
    assert row["other_income_fen"] == 4_000
    assert (row["total_income_fen"], row["per_capita_fen"]) == (23_000, 11_500)
    assert row["previous_per_capita_fen"] == 3_500


async def test_a_refund_after_recognition_moves_a_household_back_under_the_line(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, line=100)
    coop = await world.cooperative()
    household = await world.household(size=1)
    await guarantee(client, users, household)
    eggs = await supplied_product(world, coop, [(household, 10_000)], price_fen=6_000)
    order = await delivered_cod_order(client, users, [(eggs, 2)])
    await recognise(session, order)
    before = await row_of(client, users, household)
    assert before["per_capita_fen"] == 11_400 and before["exit_eligible"] is True

    line_id = order["fulfilments"][0]["lines"][0]["id"]
    await refund(client, users, order, str(coop.id), lines=[{"line_id": line_id, "quantity": 1}])
    after = await row_of(client, users, household)
    assert after["per_capita_fen"] == 5_700
    assert after["exit_eligible"] is False and after["failing"] == ["income"]


async def test_a_self_dealing_purchase_does_not_count_until_ruled(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, line=100)
    coop = await world.cooperative()
    household = await world.household(size=1)
    await guarantee(client, users, household)
    officer = await users.make(Role.officer)
    phone = "13900004321"
    patched = await client.patch(
        f"/v1/households/{household.id}", json={"phone": phone}, headers=users.auth(officer)
    )
    assert patched.status_code == 200
    eggs = await supplied_product(world, coop, [(household, 10_000)], price_fen=20_000)
    own = await users.make(Role.buyer, phone=phone)
    order = await delivered_cod_order(client, users, [(eggs, 1)], buyer=own)
    await recognise(session, order)
    row = await row_of(client, users, household)
    assert (row["ledger_income_fen"], row["ledger_left_out_fen"]) == (0, 19_000)
    assert row["exit_eligible"] is False and "income" in row["failing"]

    flag = (await session.scalars(select(AttributionFlag))).one()
    ruled = await client.post(
        f"/v1/attribution/flags/{flag.id}/ruling",
        json={"ruling": "counted", "reason": "the phone was reassigned"},
        headers=users.auth(officer),
    )
    assert ruled.status_code == 200, ruled.text
    row = await row_of(client, users, household)
    assert (row["ledger_income_fen"], row["ledger_left_out_fen"]) == (19_000, 0)
    assert row["exit_eligible"] is True


async def test_income_whose_flag_its_rule_withdrew_counts(client, users, world, session) -> None:
    await set_thresholds(client, users, line=100)
    coop = await world.cooperative()
    household = await world.household(size=1)
    await guarantee(client, users, household)
    eggs = await supplied_product(world, coop, [(household, 10_000)], price_fen=20_000)
    flags.use_policy(FlagPolicy(dominant_buyer_min_fen=500))
    try:
        # The first buyer is all of the year so far; a second buyer brings it to half.
        await recognise(session, await delivered_cod_order(client, users, [(eggs, 1)]))
        row = await row_of(client, users, household)
        assert (row["ledger_income_fen"], row["ledger_left_out_fen"]) == (0, 19_000)
        await recognise(session, await delivered_cod_order(client, users, [(eggs, 1)]))
        row = await row_of(client, users, household)
        assert (row["ledger_income_fen"], row["ledger_left_out_fen"]) == (38_000, 0)
    finally:
        flags.use_policy(FlagPolicy())


async def test_monitoring_flags_a_low_income_and_a_sharp_drop(client, users, world) -> None:
    await set_thresholds(client, users, line=100, monitoring=150, income_drop_bp=3_000)
    low = await world.household(size=1)
    await add_income(client, users, low, 14_000)
    dropped = await world.household(size=1)
    await add_income(client, users, dropped, 40_000, year=THIS_YEAR - 1)
    await add_income(client, users, dropped, 20_000)
    steady = await world.household(size=1)
    await add_income(client, users, steady, 40_000, year=THIS_YEAR - 1)
    await add_income(client, users, steady, 30_000)  # a fall of exactly 25 %
    rows = {
        r: await row_of(client, users, h) for r, h in [("l", low), ("d", dropped), ("s", steady)]
    }
    assert rows["l"]["monitoring_reasons"] == ["under_monitoring_line"]
    assert rows["d"]["monitoring_reasons"] == ["income_drop"]
    assert rows["s"]["monitoring"] is False and rows["s"]["monitoring_reasons"] == []


async def test_rows_page_through_a_region_and_filter_on_verdicts(client, users, world) -> None:
    await set_thresholds(client, users, line=100)
    made = [await world.household(size=1) for _ in range(5)]
    for household in made[:2]:
        await guarantee(client, users, household)
        await add_income(client, users, household, 20_000)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await household_rows(client, users, world.county.county, **params)).json()
        seen += [item["household_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(str(h.id) for h in made) and len(seen) == 5
    eligible = await household_rows(client, users, world.county.county, exit_eligible="true")
    assert {i["household_id"] for i in eligible.json()["items"]} == {str(h.id) for h in made[:2]}
    one = await household_rows(client, users, world.county.county, exit_eligible="true", limit=1)
    assert len(one.json()["items"]) == 1 and one.json()["next_cursor"]


async def test_an_officer_of_another_county_is_refused(client, users, world) -> None:
    await set_thresholds(client, users)
    await world.household()
    stranger = await users.make(Role.officer, county_code=world.county.other_county)
    response = await household_rows(client, users, world.county.county, actor=stranger)
    assert response.status_code == 403
    provincial = await household_rows(client, users, world.county.province)
    assert provincial.status_code == 403  # officers assess their county and below
    admin = await users.make(Role.admin)
    assert (
        await household_rows(client, users, world.county.province, actor=admin)
    ).status_code == 200


async def test_a_year_without_thresholds_cannot_be_assessed(client, users, world) -> None:
    response = await household_rows(client, users, world.county.county, year=2031)
    assert response.status_code == 404 and response.json()["field"] == "year"


async def test_an_unknown_region_is_not_found(client, users) -> None:
    admin = await users.make(Role.admin)
    response = await household_rows(client, users, "990102100099", actor=admin)
    assert response.status_code == 404
