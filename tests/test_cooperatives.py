"""Producer organisations and their member households."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services.audit.models import AuditEvent
from services.users.models import Role
from tests.factories import credit_code


def cooperative_body(village: str, **extra):
    return {
        "name": "青溪高山茶叶专业合作社",
        "kind": "cooperative",
        "credit_code": credit_code(900001),
        "village_code": village,
        "linkages": ["purchase_order", "dividend"],
        **extra,
    }


async def test_officer_registers_a_cooperative_in_own_county(client, users, world):
    officer = await users.make(Role.officer)
    response = await client.post(
        "/v1/cooperatives", json=cooperative_body(world.county.village), headers=users.auth(officer)
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["county_code"] == world.county.county
    assert body["linkages"] == ["dividend", "purchase_order"]
    public = await client.get(f"/v1/cooperatives/{body['id']}")
    assert public.status_code == 200
    assert public.json()["name"] == "青溪高山茶叶专业合作社"


async def test_officer_cannot_register_in_another_county(client, users, world):
    officer = await users.make(Role.officer)
    response = await client.post(
        "/v1/cooperatives",
        json=cooperative_body(world.county.other_village),
        headers=users.auth(officer),
    )
    assert response.status_code == 403


def _wrong_check(code: str) -> str:
    return code[:-1] + ("1" if code[-1] != "1" else "2")


@pytest.mark.parametrize(
    "code",
    ["91350100M000100Y0", _wrong_check(credit_code(900002)), "9135010O0001000Y0X", "", "x" * 40],
)
async def test_bad_credit_code_is_422_naming_it(client, users, world, code):
    response = await client.post(
        "/v1/cooperatives",
        json=cooperative_body(world.county.village, credit_code=code),
        headers=users.auth(world.admin),
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "credit_code"


async def test_same_credit_code_twice_is_409(client, users, world):
    auth = users.auth(world.admin)
    first = await client.post(
        "/v1/cooperatives", json=cooperative_body(world.county.village), headers=auth
    )
    assert first.status_code == 201
    again = await client.post(
        "/v1/cooperatives", json=cooperative_body(world.county.village2), headers=auth
    )
    assert again.status_code == 409
    assert again.json()["field"] == "credit_code"


async def test_cooperative_must_sit_in_a_village(client, users, world):
    response = await client.post(
        "/v1/cooperatives",
        json=cooperative_body(world.county.township),
        headers=users.auth(world.admin),
    )
    assert response.status_code == 422
    assert response.json()["field"] == "village_code"


@pytest.mark.parametrize("role", [Role.buyer, Role.manager, Role.site_operator])
async def test_others_cannot_register_cooperatives(client, users, world, role):
    caller = await users.make(role)
    response = await client.post(
        "/v1/cooperatives", json=cooperative_body(world.county.village), headers=users.auth(caller)
    )
    assert response.status_code == 403


async def test_manager_adds_and_lists_members_without_id_data(client, users, world, session):
    coop = await world.cooperative()
    household = await world.household(head="李春花")
    manager = await users.make(Role.manager, cooperative_id=coop.id)
    added = await client.post(
        f"/v1/cooperatives/{coop.id}/members",
        headers=users.auth(manager),
        json={
            "household_id": str(household.id),
            "joined_on": "2021-03-01",
            "linkages": ["employment"],
        },
    )
    assert added.status_code == 201, added.text
    listed = await client.get(f"/v1/cooperatives/{coop.id}/members", headers=users.auth(manager))
    assert listed.status_code == 200
    [member] = listed.json()
    assert member["head_name"] == "李春花"
    assert member["size"] == 3
    assert "id_number" not in listed.text and "last4" not in listed.text
    audited = (
        await session.scalars(
            select(AuditEvent).where(AuditEvent.action == "cooperative.members.read")
        )
    ).all()
    assert [a.subject_id for a in audited] == [str(household.id)]
    assert audited[0].actor_id == manager.id


async def test_member_twice_is_409(client, users, world):
    coop = await world.cooperative()
    household = await world.household()
    body = {"household_id": str(household.id), "joined_on": "2021-03-01"}
    auth = users.auth(world.admin)
    assert (
        await client.post(f"/v1/cooperatives/{coop.id}/members", json=body, headers=auth)
    ).status_code == 201
    again = await client.post(f"/v1/cooperatives/{coop.id}/members", json=body, headers=auth)
    assert again.status_code == 409


async def test_household_of_another_county_cannot_join(client, users, world):
    coop = await world.cooperative()
    far = await world.household(world.county.other_village)
    response = await client.post(
        f"/v1/cooperatives/{coop.id}/members",
        headers=users.auth(world.admin),
        json={"household_id": str(far.id), "joined_on": "2021-03-01"},
    )
    assert response.status_code == 422
    assert response.json()["field"] == "household_id"


async def test_manager_of_another_cooperative_cannot_touch_members(client, users, world):
    mine, theirs = await world.cooperative(), await world.cooperative()
    household = await world.household()
    manager = await users.make(Role.manager, cooperative_id=mine.id)
    listed = await client.get(f"/v1/cooperatives/{theirs.id}/members", headers=users.auth(manager))
    added = await client.post(
        f"/v1/cooperatives/{theirs.id}/members",
        headers=users.auth(manager),
        json={"household_id": str(household.id), "joined_on": "2021-03-01"},
    )
    assert listed.status_code == added.status_code == 403


async def test_buyer_sees_no_members(client, users, world):
    coop = await world.cooperative()
    buyer = await users.make(Role.buyer)
    response = await client.get(f"/v1/cooperatives/{coop.id}/members", headers=users.auth(buyer))
    assert response.status_code == 403


async def test_public_cooperative_view_has_no_household_data(client, world):
    coop = await world.cooperative()
    household = await world.household(head="赵铁柱")
    await world.member(coop, household)
    response = await client.get(f"/v1/cooperatives/{coop.id}")
    assert "赵铁柱" not in response.text and str(household.id) not in response.text
