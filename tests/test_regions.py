"""Regions by division code, and village service sites."""

from __future__ import annotations

import pytest

from services.errors import Invalid
from services.regions.codes import Level, code_range, level_of, normalise, parent_of
from services.users.models import Role


@pytest.mark.parametrize(
    ("code", "level", "parent"),
    [
        ("990000000000", Level.province, None),
        ("990100000000", Level.city, "990000000000"),
        ("990102000000", Level.county, "990100000000"),
        ("990102100000", Level.township, "990102000000"),
        ("990102100001", Level.village, "990102100000"),
    ],
)
def test_code_names_its_level_and_parent(code, level, parent):
    assert level_of(code) is level
    assert parent_of(code) == parent


@pytest.mark.parametrize(
    "code",
    [
        "99010200000",
        "9901020000000",
        "99010200000a",
        "000102000000",
        "990002000000",
        "990100100000",
    ],
)
def test_malformed_codes_are_refused(code):
    with pytest.raises(Invalid) as error:
        level_of(code)
    assert error.value.field == "code"


def test_code_range_covers_everything_under_a_region():
    assert code_range("990102000000") == ("990102000000", "990102999999")
    assert code_range("990102100001") == ("990102100001", "990102100001")
    assert normalise("990102") == "990102000000"


async def test_admin_builds_the_hierarchy_and_the_public_reads_it(client, users):
    admin = await users.make(Role.admin)
    auth = users.auth(admin)
    for code, name in [
        ("980000000000", "试验省"),
        ("980100000000", "试验市"),
        ("980101000000", "试验县"),
    ]:
        body = {"code": code, "name": name} | ({"western": True} if code[2:4] == "00" else {})
        response = await client.post("/v1/regions", json=body, headers=auth)
        assert response.status_code == 201, response.text
    county = (await client.get("/v1/regions/980101000000")).json()
    assert county["level"] == "county"
    assert county["parent_code"] == "980100000000"
    assert county["western"] is True, "the western flag is inherited from the province"
    children = (await client.get("/v1/regions", params={"parent": "980100000000"})).json()
    assert [r["code"] for r in children["items"]] == ["980101000000"]


async def test_region_without_its_parent_is_422(client, users):
    admin = await users.make(Role.admin)
    response = await client.post(
        "/v1/regions", json={"code": "970101000000", "name": "孤县"}, headers=users.auth(admin)
    )
    assert response.status_code == 422
    assert response.json()["field"] == "code"


async def test_region_level_must_match_its_code(client, users, world):
    response = await client.post(
        "/v1/regions",
        json={"code": "990102100003", "name": "新村", "level": "township"},
        headers=users.auth(world.admin),
    )
    assert response.status_code == 422
    assert response.json()["field"] == "level"


async def test_duplicate_region_is_409(client, users, world):
    response = await client.post(
        "/v1/regions",
        json={"code": world.county.village, "name": "x"},
        headers=users.auth(world.admin),
    )
    assert response.status_code == 409


async def test_bad_code_in_body_and_path_is_422_naming_it(client, users):
    admin = await users.make(Role.admin)
    response = await client.post(
        "/v1/regions", json={"code": "12345", "name": "x"}, headers=users.auth(admin)
    )
    assert response.status_code == 422
    assert response.json()["field"] == "code"
    assert (await client.get("/v1/regions/12345")).status_code == 422


@pytest.mark.parametrize("role", [Role.buyer, Role.officer, Role.manager])
async def test_only_admins_create_regions(client, users, role):
    caller = await users.make(role)
    response = await client.post(
        "/v1/regions", json={"code": "960000000000", "name": "x"}, headers=users.auth(caller)
    )
    assert response.status_code == 403


async def test_regions_page_with_a_cursor(client, world):
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/regions", params=params)).json()
        seen += [r["code"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen)) >= 9


async def test_tampered_cursor_is_422(client, world):
    response = await client.get("/v1/regions", params={"cursor": "not-a-cursor"})
    assert response.status_code == 422
    assert response.json()["field"] == "cursor"


async def test_service_site_lives_in_a_village(client, users, world):
    auth = users.auth(world.admin)
    ok = await client.post(
        "/v1/service-sites",
        headers=auth,
        json={"village_code": world.county.village, "kind": "postal", "name": "上坪邮政服务站"},
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["county_code"] == world.county.county
    bad = await client.post(
        "/v1/service-sites",
        headers=auth,
        json={"village_code": world.county.county, "kind": "postal", "name": "x"},
    )
    assert bad.status_code == 422
    assert bad.json()["field"] == "village_code"
    kind = await client.post(
        "/v1/service-sites",
        headers=auth,
        json={"village_code": world.county.village, "kind": "shop", "name": "x"},
    )
    assert kind.status_code == 422
    assert kind.json()["field"] == "kind"


async def test_sites_are_listed_by_region(client, world):
    here = await world.site(world.county.village)
    there = await world.site(world.county.other_village)
    listed = (await client.get("/v1/service-sites", params={"region": world.county.county})).json()
    ids = {s["id"] for s in listed["items"]}
    assert str(here.id) in ids
    assert str(there.id) not in ids
