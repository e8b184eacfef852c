"""Products, certificates and supply shares: who may do what, and what buyers never see."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.catalog import service as catalog
from services.catalog.models import ProductStatus
from services.users.models import Role


def product_body(**extra):
    return {
        "title": "河田鸡 散养两年 Free-range Hetian chicken",
        "category": "poultry",
        "unit": "只",
        "price_fen": 16800,
        "stock": 20,
        "status": "active",
        "description": "山区林下散养",
        **extra,
    }


async def manager_of(users, coop):
    return await users.make(Role.manager, cooperative_id=coop.id)


async def test_manager_lists_a_product_for_own_cooperative(client, users, world):
    coop = await world.cooperative()
    manager = await manager_of(users, coop)
    response = await client.post(
        f"/v1/cooperatives/{coop.id}/products", json=product_body(), headers=users.auth(manager)
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["cooperative"]["id"] == str(coop.id)
    assert body["origin_village_code"] == coop.village_code
    assert body["price_fen"] == 16800 and body["currency"] == "CNY"
    assert body["certified"] is False and body["certificate"] is None


async def test_manager_cannot_touch_another_cooperatives_products(client, users, world):
    mine, theirs = await world.cooperative(), await world.cooperative()
    manager = await manager_of(users, mine)
    product = await world.product(theirs)
    auth = users.auth(manager)
    created = await client.post(
        f"/v1/cooperatives/{theirs.id}/products", json=product_body(), headers=auth
    )
    edited = await client.patch(f"/v1/products/{product.id}", json={"stock": 0}, headers=auth)
    shared = await client.put(f"/v1/products/{product.id}/supply-shares", json=[], headers=auth)
    assert created.status_code == edited.status_code == shared.status_code == 403


@pytest.mark.parametrize("role", [Role.buyer, Role.officer, Role.site_operator])
async def test_only_managers_and_admins_list_products(client, users, world, role):
    coop = await world.cooperative()
    caller = await users.make(role)
    response = await client.post(
        f"/v1/cooperatives/{coop.id}/products", json=product_body(), headers=users.auth(caller)
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"price_fen": 0}, "price_fen"),
        ({"price_fen": 12.5}, "price_fen"),
        ({"stock": -1}, "stock"),
        ({"category": "Bad Category"}, "category"),
        ({"title": ""}, "title"),
        ({"image_urls": ["not a url"]}, "image_urls.0"),
        ({"origin_village_code": "990102000000"}, "origin_village_code"),
        ({"status": "sold"}, "status"),
    ],
)
async def test_product_validation_names_the_field(client, users, world, change, field):
    coop = await world.cooperative()
    manager = await manager_of(users, coop)
    response = await client.post(
        f"/v1/cooperatives/{coop.id}/products",
        json=product_body(**change),
        headers=users.auth(manager),
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


async def test_manager_edits_stock_and_status(client, users, world):
    coop = await world.cooperative()
    product = await world.product(coop)
    manager = await manager_of(users, coop)
    response = await client.patch(
        f"/v1/products/{product.id}",
        headers=users.auth(manager),
        json={"stock": 0, "status": "archived", "price_fen": 999},
    )
    assert response.status_code == 200, response.text
    assert response.json()["stock"] == 0
    assert response.json()["status"] == "archived"
    assert (await client.get(f"/v1/products/{product.id}")).status_code == 404
    own = await client.get(f"/v1/products/{product.id}", headers=users.auth(manager))
    assert own.status_code == 200


async def test_officer_certifies_and_an_expired_certificate_shows_no_badge(client, users, world):
    coop = await world.cooperative()
    product = await world.product(coop)
    officer = await users.make(Role.officer)
    later = (date.today() + timedelta(days=365)).isoformat()
    response = await client.put(
        f"/v1/products/{product.id}/certificate",
        headers=users.auth(officer),
        json={"number": "FP-2026-0001", "issuer": "青溪县乡村振兴局", "valid_until": later},
    )
    assert response.status_code == 200, response.text
    public = (await client.get(f"/v1/products/{product.id}")).json()
    assert public["certified"] is True
    assert public["certificate"]["number"] == "FP-2026-0001"
    expired = (date.today() - timedelta(days=1)).isoformat()
    await client.put(
        f"/v1/products/{product.id}/certificate",
        headers=users.auth(officer),
        json={"number": "FP-2024-0001", "issuer": "x", "valid_until": expired},
    )
    public = (await client.get(f"/v1/products/{product.id}")).json()
    assert public["certified"] is False and public["certificate"] is None


async def test_officer_of_another_county_and_managers_cannot_certify(client, users, world):
    coop = await world.cooperative()
    product = await world.product(coop)
    stranger = await users.make(Role.officer, county_code=world.county.other_county)
    manager = await manager_of(users, coop)
    body = {"number": "FP-1", "issuer": "x", "valid_until": "2099-01-01"}
    url = f"/v1/products/{product.id}/certificate"
    assert (await client.put(url, json=body, headers=users.auth(stranger))).status_code == 403
    assert (await client.put(url, json=body, headers=users.auth(manager))).status_code == 403


async def shares_world(world, n=2):
    coop = await world.cooperative()
    households = [await world.household() for _ in range(n)]
    for h in households:
        await world.member(coop, h)
    return coop, households, await world.product(coop)


async def test_supply_shares_are_set_and_read(client, users, world):
    coop, (a, b), product = await shares_world(world)
    manager = await manager_of(users, coop)
    body = [
        {"household_id": str(a.id), "basis_points": 3000},
        {"household_id": str(b.id), "basis_points": 2500},
    ]
    response = await client.put(
        f"/v1/products/{product.id}/supply-shares", json=body, headers=users.auth(manager)
    )
    assert response.status_code == 200, response.text
    assert response.json()["total_basis_points"] == 5500
    assert response.json()["cooperative_basis_points"] == 4500
    read = await client.get(f"/v1/products/{product.id}/supply-shares", headers=users.auth(manager))
    assert {s["household_id"] for s in read.json()["shares"]} == {str(a.id), str(b.id)}


@pytest.mark.parametrize(
    ("shares", "field"),
    [
        (lambda a, b, far: [(a, 6000), (b, 4001)], "basis_points"),
        (lambda a, b, far: [(a, 100), (far, 100)], "1.household_id"),
        (lambda a, b, far: [(a, 100), (a, 100)], "1.household_id"),
        (lambda a, b, far: [(a, 0)], "0.basis_points"),
        (lambda a, b, far: [(a, 10001)], "0.basis_points"),
    ],
)
async def test_bad_shares_are_422_naming_the_field(client, users, world, shares, field):
    coop, (a, b), product = await shares_world(world)
    outsider = await world.household()
    manager = await manager_of(users, coop)
    body = [{"household_id": str(h.id), "basis_points": bp} for h, bp in shares(a, b, outsider)]
    response = await client.put(
        f"/v1/products/{product.id}/supply-shares", json=body, headers=users.auth(manager)
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


async def test_a_sale_can_use_the_shares_in_force_when_it_was_paid(session, world):
    _coop, (a, b), product = await shares_world(world)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    await catalog.set_shares(session, world.admin, product.id, [catalog.Share(a.id, 10000)], now=t0)
    await catalog.set_shares(
        session,
        world.admin,
        product.id,
        [catalog.Share(a.id, 5000), catalog.Share(b.id, 5000)],
        now=t0 + timedelta(days=30),
    )
    before = await catalog.shares_at(session, product.id, t0 - timedelta(seconds=1))
    first = await catalog.shares_at(session, product.id, t0 + timedelta(days=1))
    second = await catalog.shares_at(session, product.id, t0 + timedelta(days=31))
    assert before.shares == []
    assert [(s.household_id, s.basis_points) for s in first.shares] == [(a.id, 10000)]
    assert sorted(s.basis_points for s in second.shares) == [5000, 5000]


async def test_buyers_see_no_household_data_anywhere(client, users, world):
    coop, (a, _b), product = await shares_world(world)
    await catalog.set_shares(
        users.session, world.admin, product.id, [catalog.Share(a.id, 4000)], now=datetime.now(UTC)
    )
    buyer = await users.make(Role.buyer)
    auth = users.auth(buyer)
    texts = [
        (await client.get(f"/v1/products/{product.id}", headers=auth)).text,
        (await client.get("/v1/products", headers=auth)).text,
        (await client.get(f"/v1/cooperatives/{coop.id}", headers=auth)).text,
    ]
    for body in texts:
        assert str(a.id) not in body and "王大山" not in body and "household" not in body
    shares = await client.get(f"/v1/products/{product.id}/supply-shares", headers=auth)
    assert shares.status_code == 403


async def test_manager_lists_own_products_in_every_status(client, users, world):
    coop, other = await world.cooperative(), await world.cooperative()
    active = await world.product(coop)
    draft = await world.product(coop, status=ProductStatus.draft)
    await world.product(other)
    manager = await manager_of(users, coop)
    url = f"/v1/cooperatives/{coop.id}/products"
    listed = (await client.get(url, headers=users.auth(manager))).json()
    assert {p["id"] for p in listed["items"]} == {str(active.id), str(draft.id)}
    drafts = await client.get(url, params={"status": "draft"}, headers=users.auth(manager))
    assert [p["id"] for p in drafts.json()["items"]] == [str(draft.id)]
    stranger = await manager_of(users, other)
    assert (await client.get(url, headers=users.auth(stranger))).status_code == 403
