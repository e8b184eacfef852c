"""Staff accounts: only admins make them, and each role carries its scope."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import inspect

from services.errors import Forbidden
from services.users import access
from services.users.models import Role, User
from services.users.service import read_active_user


def staff(role: str, **extra):
    return {
        "email": f"{role}-{uuid.uuid4().hex[:6]}@county.example.com",
        "password": "staff-pass-1",
        "role": role,
        **extra,
    }


async def test_admin_creates_an_officer_for_a_county(client, users, world):
    response = await client.post(
        "/v1/users", json=staff("officer", county_code="990102"), headers=users.auth(world.admin)
    )
    assert response.status_code == 201, response.text
    assert response.json()["county_code"] == "990102000000"
    assert response.json()["role"] == "officer"


async def test_officer_of_an_unknown_or_non_county_region_is_422(client, users, world):
    for code in ("445302", world.county.village):
        response = await client.post(
            "/v1/users", json=staff("officer", county_code=code), headers=users.auth(world.admin)
        )
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "county_code"


@pytest.mark.parametrize("role", ["manager", "site_operator"])
async def test_staff_scope_must_exist(client, users, role):
    admin = await users.make(Role.admin)
    field = "cooperative_id" if role == "manager" else "site_id"
    body = staff(role, **{field: str(uuid.uuid4())})
    response = await client.post("/v1/users", json=body, headers=users.auth(admin))
    assert response.status_code == 422
    assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("role", "field"),
    [("officer", "county_code"), ("manager", "cooperative_id"), ("site_operator", "site_id")],
)
async def test_staff_role_without_its_scope_is_422(client, users, role, field):
    admin = await users.make(Role.admin)
    response = await client.post("/v1/users", json=staff(role), headers=users.auth(admin))
    assert response.status_code == 422
    assert response.json()["field"] == field


async def test_scope_field_of_another_role_is_422(client, users):
    admin = await users.make(Role.admin)
    body = staff("manager", cooperative_id=str(uuid.uuid4()), county_code="990102")
    response = await client.post("/v1/users", json=body, headers=users.auth(admin))
    assert response.status_code == 422
    assert response.json()["field"] == "county_code"


async def test_admin_cannot_create_buyers_through_staff_endpoint(client, users):
    admin = await users.make(Role.admin)
    response = await client.post("/v1/users", json=staff("buyer"), headers=users.auth(admin))
    assert response.status_code == 422
    assert response.json()["field"] == "role"


@pytest.mark.parametrize("role", [Role.buyer, Role.officer, Role.manager, Role.site_operator])
async def test_non_admins_cannot_create_staff(client, users, role):
    caller = await users.make(role)
    response = await client.post("/v1/users", json=staff("admin"), headers=users.auth(caller))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


async def test_anonymous_cannot_create_staff(client):
    response = await client.post("/v1/users", json=staff("admin"))
    assert response.status_code == 401


async def test_officer_acts_only_in_own_county(users, world):
    officer = await users.make(Role.officer)
    access.ensure_county(officer, world.county.village)  # a village of that county
    with pytest.raises(Forbidden):
        access.ensure_county(officer, world.county.other_village)


async def test_manager_acts_only_on_own_cooperative(users, world):
    coop = (await world.cooperative()).id
    manager = await users.make(Role.manager, cooperative_id=coop)
    access.ensure_cooperative(manager, coop)
    with pytest.raises(Forbidden):
        access.ensure_cooperative(manager, uuid.uuid4())
    officer = await users.make(Role.officer)
    with pytest.raises(Forbidden):
        access.ensure_cooperative(officer, coop)


async def test_site_operator_acts_only_at_own_site(users, world):
    site = (await world.site()).id
    operator = await users.make(Role.site_operator, site_id=site)
    access.ensure_site(operator, site)
    with pytest.raises(Forbidden):
        access.ensure_site(operator, uuid.uuid4())


async def test_admin_acts_everywhere(users):
    admin = await users.make(Role.admin)
    access.ensure_county(admin, "110101000000")
    access.ensure_cooperative(admin, uuid.uuid4())
    access.ensure_site(admin, uuid.uuid4())


async def test_a_user_read_outside_a_transaction_comes_back_detached_and_whole(
    users, sessionmaker, session
):
    manager = await users.make(Role.manager)
    read = await read_active_user(sessionmaker, manager.id)
    assert read is not None and inspect(read).detached
    # Every column was loaded: reading them needs no session.
    assert {c.key: getattr(read, c.key) for c in inspect(User).column_attrs} == {
        c.key: getattr(manager, c.key) for c in inspect(User).column_attrs
    }
    assert read.role is Role.manager

    manager.is_active = False
    await session.flush()
    assert await read_active_user(sessionmaker, manager.id) is None
    assert await read_active_user(sessionmaker, uuid.uuid4()) is None
