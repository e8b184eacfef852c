"""Household file cards: validation, ID privacy, scope, status history, incomes, cadres."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select, text

from services.audit.models import AuditEvent
from services.households.ids import make_id_number
from services.users.models import Role
from tests.factories import id_number


def member(relation="head", **extra):
    return {
        "name": "陈秀英",
        "sex": "female",
        "relation": relation,
        "education": "primary",
        "health": "healthy",
        "labour": "ordinary",
        **extra,
    }


def card(village: str, members=None, **extra):
    return {
        "village_code": village,
        "main_cause": "illness",
        "other_causes": ["funds"],
        "registration_year": 2015,
        "household_type": "minimum_living",
        "members": members or [member(id_number=id_number())],
        "food_clothing": True,
        **extra,
    }


def _wrong_check(number: str) -> str:
    return number[:-1] + ("1" if number[-1] != "1" else "2")


async def create(client, users, officer, body):
    return await client.post("/v1/households", json=body, headers=users.auth(officer))


async def test_officer_registers_a_household_and_reads_it_back(client, users, world):
    officer = await users.make(Role.officer)
    number = id_number()
    response = await create(
        client,
        users,
        officer,
        card(
            world.county.village,
            members=[
                member(id_number=number),
                member("child", name="陈小明", sex="male", in_school=True, education="primary"),
            ],
        ),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "registered"
    assert body["size"] == 2
    assert body["county_code"] == world.county.county
    head = body["members"][0]
    assert head["id_number_masked"] == "*" * 14 + number[-4:]
    assert number not in response.text
    read = await client.get(f"/v1/households/{body['id']}", headers=users.auth(officer))
    assert read.json() == body


async def test_id_number_is_never_stored_in_clear(client, users, world, connection):
    officer = await users.make(Role.officer)
    number = id_number()
    response = await create(
        client, users, officer, card(world.county.village, members=[member(id_number=number)])
    )
    assert response.status_code == 201
    dump = await connection.execute(
        text(
            "SELECT row_to_json(m)::text FROM household_members m UNION ALL "
            "SELECT row_to_json(h)::text FROM households h UNION ALL "
            "SELECT row_to_json(a)::text FROM audit_events a"
        )
    )
    rows = [row[0] for row in dump]
    assert rows
    assert not any(number in row or number[:17] in row for row in rows)


@pytest.mark.parametrize(
    ("number", "why"),
    [
        (_wrong_check(make_id_number("990102", date(1980, 5, 17), 7)), "checksum"),
        ("99010219801317007X", "birth date 13th month"),
        (make_id_number("990102", date(2099, 1, 1), 7), "birth in the future"),
        ("1234567890", "length"),
        ("99010219800517ABC1", "letters"),
    ],
)
async def test_bad_id_numbers_are_422_naming_the_member(client, users, world, number, why):
    officer = await users.make(Role.officer)
    response = await create(
        client,
        users,
        officer,
        card(
            world.county.village,
            members=[member(id_number=id_number()), member("spouse", id_number=number)],
        ),
    )
    assert response.status_code == 422, (why, response.text)
    assert response.json()["field"] == "members.1.id_number"


async def test_same_id_number_twice_is_409(client, users, world):
    officer = await users.make(Role.officer)
    number = id_number()
    first = await create(
        client, users, officer, card(world.county.village, members=[member(id_number=number)])
    )
    assert first.status_code == 201
    again = await create(
        client, users, officer, card(world.county.village2, members=[member(id_number=number)])
    )
    assert again.status_code == 409
    inside = await create(
        client,
        users,
        officer,
        card(
            world.county.village,
            members=[member(id_number=id_number()), member("spouse", id_number=number.lower())],
        ),
    )
    assert inside.status_code == 409


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"other_causes": ["funds", "land", "water"]}, "other_causes"),
        ({"other_causes": ["illness"]}, "other_causes"),
        ({"main_cause": "laziness"}, "main_cause"),
        ({"members": [member("spouse")]}, "members"),
        ({"members": []}, "members"),
        ({"village_code": "990102000000"}, "village_code"),
        ({"registration_year": 1900}, "registration_year"),
    ],
)
async def test_card_rules_are_422_naming_the_field(client, users, world, change, field):
    officer = await users.make(Role.officer)
    response = await create(client, users, officer, card(world.county.village) | change)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


async def test_officer_of_another_county_sees_nothing(client, users, world):
    household = await world.household()
    stranger = await users.make(Role.officer, county_code=world.county.other_county)
    read = await client.get(f"/v1/households/{household.id}", headers=users.auth(stranger))
    assert read.status_code == 404
    patch = await client.patch(
        f"/v1/households/{household.id}", json={"address": "x"}, headers=users.auth(stranger)
    )
    assert patch.status_code == 404
    created = await create(client, users, stranger, card(world.county.village))
    assert created.status_code == 403
    listed = await client.get("/v1/households", headers=users.auth(stranger))
    assert listed.json()["items"] == []


@pytest.mark.parametrize("role", [Role.buyer, Role.manager, Role.site_operator])
async def test_non_officers_cannot_read_file_cards(client, users, world, role):
    household = await world.household()
    caller = await users.make(role)
    assert (
        await client.get(f"/v1/households/{household.id}", headers=users.auth(caller))
    ).status_code == 403
    assert (await client.get("/v1/households", headers=users.auth(caller))).status_code == 403


async def test_reading_names_is_audited(client, users, world, session):
    household = await world.household()
    officer = await users.make(Role.officer)
    await client.get(f"/v1/households/{household.id}", headers=users.auth(officer))
    await client.get("/v1/households", headers=users.auth(officer))
    events = (
        await session.scalars(
            select(AuditEvent).where(AuditEvent.actor_id == officer.id).order_by(AuditEvent.id)
        )
    ).all()
    assert [(e.action, e.subject_id) for e in events] == [
        ("household.read", str(household.id)),
        ("household.list", str(household.id)),
    ]


async def test_list_pages_by_region(client, users, world):
    made = {str((await world.household(world.county.village)).id) for _ in range(3)}
    made.add(str((await world.household(world.county.village2)).id))
    officer = await users.make(Role.officer)
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (
            await client.get("/v1/households", params=params, headers=users.auth(officer))
        ).json()
        seen += [h["id"] for h in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert set(seen) == made and len(seen) == 4
    village = (
        await client.get(
            "/v1/households", params={"region": world.county.village2}, headers=users.auth(officer)
        )
    ).json()
    assert len(village["items"]) == 1


async def test_patch_edits_the_card(client, users, world):
    household = await world.household()
    officer = await users.make(Role.officer)
    response = await client.patch(
        f"/v1/households/{household.id}",
        headers=users.auth(officer),
        json={"safe_drinking_water": True, "address": "三组", "other_causes": ["land"]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["safe_drinking_water"] is True
    assert body["address"] == "三组"
    assert body["other_causes"] == ["land"]
    bad = await client.patch(
        f"/v1/households/{household.id}", headers=users.auth(officer), json={"status": "exited"}
    )
    assert bad.status_code == 422


async def test_status_moves_are_recorded_and_illegal_ones_are_409(client, users, world):
    household = await world.household()
    officer = await users.make(Role.officer)
    url = f"/v1/households/{household.id}"
    workflow = await client.post(
        f"{url}/status",
        headers=users.auth(officer),
        json={"status": "exited", "reason": "income above line"},
    )
    assert workflow.status_code == 409
    assert workflow.json()["from_status"] == "registered"
    assert workflow.json()["to_status"] == "exited"
    moved = await client.post(
        f"{url}/status",
        headers=users.auth(officer),
        json={"status": "deregistered", "reason": "moved to the city"},
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["status"] == "deregistered"
    history = (await client.get(f"{url}/status-history", headers=users.auth(officer))).json()
    assert [(h["from_status"], h["to_status"]) for h in history] == [
        (None, "registered"),
        ("registered", "deregistered"),
    ]
    assert history[1]["actor_id"] == str(officer.id)
    assert history[1]["reason"] == "moved to the city"


async def test_other_income_by_year_and_kind(client, users, world):
    household = await world.household()
    officer = await users.make(Role.officer)
    url = f"/v1/households/{household.id}/incomes"
    for year, kind, amount in [(2024, "wage", 1200000), (2025, "transfer", 80000)]:
        response = await client.post(
            url,
            headers=users.auth(officer),
            json={"year": year, "kind": kind, "amount_fen": amount},
        )
        assert response.status_code == 201, response.text
    only_2025 = (await client.get(url, params={"year": 2025}, headers=users.auth(officer))).json()
    assert [(i["kind"], i["amount_fen"], i["currency"]) for i in only_2025] == [
        ("transfer", 80000, "CNY")
    ]
    negative = await client.post(
        url, headers=users.auth(officer), json={"year": 2025, "kind": "wage", "amount_fen": -1}
    )
    assert negative.status_code == 422
    assert negative.json()["field"] == "amount_fen"
    fractional = await client.post(
        url, headers=users.auth(officer), json={"year": 2025, "kind": "wage", "amount_fen": 10.5}
    )
    assert fractional.status_code == 422


async def test_cadre_changes_append(client, users, world):
    household = await world.household()
    officer = await users.make(Role.officer)
    url = f"/v1/households/{household.id}/cadres"
    await client.post(
        url,
        headers=users.auth(officer),
        json={"name": "刘干部", "unit": "县农业局", "start_date": "2019-01-01"},
    )
    response = await client.post(
        url, headers=users.auth(officer), json={"name": "周干部", "start_date": "2022-06-01"}
    )
    assert [c["name"] for c in response.json()] == ["刘干部", "周干部"]
