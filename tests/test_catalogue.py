"""The public catalogue: search, filters, sorting, cursors, ETags, index use."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from services.catalog import ranking
from services.catalog import service as catalog
from services.catalog.models import ProductStatus
from services.cooperatives import service as cooperatives
from services.cooperatives.models import CooperativeStatus


@pytest.fixture
async def shelf(world, session):
    """Two cooperatives in two villages, one suspended cooperative, a mix of products."""
    c = world.county
    upper = await world.cooperative(c.village)
    lower = await world.cooperative(c.village2)
    suspended = await world.cooperative(c.village)
    made = {
        "chicken": await world.product(
            upper,
            title="上坪村 河田鸡 散养",
            price_fen=16800,
            category="poultry",
            description="Free-range HETIAN chicken, 两年",
        ),
        "eggs": await world.product(
            upper, title="高山土鸡蛋 30枚", price_fen=3990, category="eggs", stock=0
        ),
        "honey": await world.product(
            lower,
            title="野生蜂蜜",
            price_fen=8800,
            category="honey",
            description="Organic wild honey from the hills",
        ),
        "tea": await world.product(lower, title="高山云雾茶", price_fen=12800, category="tea"),
        "draft": await world.product(upper, title="河田鸡 草稿", status=ProductStatus.draft),
        "hidden": await world.product(suspended, title="河田鸡 停业社"),
    }
    await cooperatives.update_cooperative(
        session, world.admin, suspended.id, {"status": CooperativeStatus.suspended}
    )
    await catalog.certify(
        session,
        world.admin,
        made["honey"].id,
        catalog.Certificate("FP-1", "青溪县乡村振兴局", date.today() + timedelta(days=100)),
    )
    await catalog.certify(
        session,
        world.admin,
        made["tea"].id,
        catalog.Certificate("FP-2", "青溪县乡村振兴局", date.today() - timedelta(days=1)),
    )
    await session.flush()
    return {name: str(p.id) for name, p in made.items()}


async def titles(client, **params):
    response = await client.get("/v1/products", params=params)
    assert response.status_code == 200, response.text
    return {item["title"] for item in response.json()["items"]}


async def ids(client, **params):
    response = await client.get("/v1/products", params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_only_active_products_of_active_cooperatives_appear(client, shelf):
    listed = set(await ids(client, limit=100))
    assert listed == {shelf[k] for k in ("chicken", "eggs", "honey", "tea")}
    assert (await client.get(f"/v1/products/{shelf['draft']}")).status_code == 404
    assert (await client.get(f"/v1/products/{shelf['hidden']}")).status_code == 404


async def test_chinese_substring_search(client, shelf):
    assert await ids(client, q="河田鸡") == [shelf["chicken"]]
    assert await ids(client, q="土鸡") == [shelf["eggs"]]
    assert set(await ids(client, q="高山")) == {shelf["eggs"], shelf["tea"]}
    assert await ids(client, q="蜜") == [shelf["honey"]]
    assert await ids(client, q="河田鸭") == []


async def test_english_search_is_case_insensitive_and_matches_descriptions(client, shelf):
    assert await ids(client, q="hetian") == [shelf["chicken"]]
    assert await ids(client, q="ORGANIC Honey") == [shelf["honey"]]
    assert await ids(client, q="honey organic") == [shelf["honey"]], "every word, any order"
    assert await ids(client, q="chicken honey") == []


async def test_search_text_with_like_wildcards_is_taken_literally(client, shelf):
    assert await ids(client, q="%") == []
    assert await ids(client, q="_") == []


async def test_filters(client, shelf):
    assert await ids(client, category="honey") == [shelf["honey"]]
    assert await ids(client, certified="true") == [shelf["honey"]]
    assert shelf["tea"] in await ids(client, certified="false"), "an expired certificate"
    assert set(await ids(client, min_price=8000, max_price=13000)) == {shelf["honey"], shelf["tea"]}
    assert shelf["eggs"] not in await ids(client, in_stock="true")
    assert await ids(client, in_stock="false") == [shelf["eggs"]]


async def test_region_filter_at_every_level(client, shelf, world):
    c = world.county
    everything = {shelf[k] for k in ("chicken", "eggs", "honey", "tea")}
    for code in (c.province, c.city, c.county, c.township):
        assert set(await ids(client, region=code)) == everything, code
    assert set(await ids(client, region=c.village)) == {shelf["chicken"], shelf["eggs"]}
    assert set(await ids(client, region=c.village2)) == {shelf["honey"], shelf["tea"]}
    assert await ids(client, region=c.other_county) == []


async def test_combined_region_certified_and_price(client, shelf, world):
    found = await ids(
        client, region=world.county.county, certified="true", min_price=1000, max_price=9000
    )
    assert found == [shelf["honey"]]


async def sell(session, product_id: str, sold: int) -> None:
    await session.execute(
        text("UPDATE products SET sold_count = :sold WHERE id = :id"),
        {"id": product_id, "sold": sold},
    )


async def test_sorts(client, shelf, session):
    await sell(session, shelf["tea"], 50)
    await ranking.rank_best_selling(session)
    by_price = await ids(client, sort="price_asc")
    assert by_price == [shelf[k] for k in ("eggs", "honey", "tea", "chicken")]
    assert await ids(client, sort="price_desc") == list(reversed(by_price))
    assert (await ids(client, sort="best_selling"))[0] == shelf["tea"]
    newest = await ids(client, sort="newest")
    assert set(newest) == set(by_price)


async def test_best_selling_order_moves_with_the_ranking_pass_not_with_each_sale(
    client, shelf, session
):
    await sell(session, shelf["tea"], 50)
    assert await ranking.rank_best_selling(session) == 1
    await sell(session, shelf["honey"], 80)
    response = await client.get("/v1/products", params={"sort": "best_selling"})
    items = response.json()["items"]
    assert items[0]["id"] == shelf["tea"]
    # The count shown is always the live one; only the order waits for the pass.
    assert next(i["sold_count"] for i in items if i["id"] == shelf["honey"]) == 80

    assert await ranking.rank_best_selling(session) == 1
    assert (await ids(client, sort="best_selling"))[:2] == [shelf["honey"], shelf["tea"]]
    assert await ranking.rank_best_selling(session) == 0


async def test_ranking_pass_works_in_batches_and_reaches_every_product(client, world, session):
    coop = await world.cooperative()
    made = [(await world.product(coop, title=f"板栗 {i}")).id for i in range(7)]
    for sold, product_id in enumerate(made, start=1):
        await sell(session, str(product_id), sold * 10)
    assert await ranking.rank_best_selling(session, batch=3) == 3
    assert await ranking.rank_best_selling(session, batch=3) == 3
    assert await ranking.rank_best_selling(session, batch=3) == 1
    assert await ranking.rank_best_selling(session, batch=3) == 0
    ranked = await ids(client, sort="best_selling", limit=7)
    assert ranked == [str(p) for p in reversed(made)]


@pytest.mark.parametrize("sort", ["newest", "price_asc", "price_desc", "best_selling"])
async def test_cursor_pages_return_each_product_once_while_products_are_added(
    client, world, session, sort
):
    coop = await world.cooperative()
    originals = {
        str((await world.product(coop, title=f"核桃 {i}", price_fen=1000 + 7 * (i % 5))).id)
        for i in range(23)
    }
    seen: list[str] = []
    cursor = None
    added = 0
    while True:
        params = {"limit": 4, "sort": sort} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/products", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        # New listings arrive between page requests, at every price.
        await world.product(coop, title=f"新核桃 {added}", price_fen=1000 + 7 * (added % 5))
        added += 1
        if not (cursor := page["next_cursor"]):
            break
    counted = [i for i in seen if i in originals]
    assert len(counted) == len(set(counted)) == len(originals)
    assert len(seen) == len(set(seen))


async def test_a_cursor_of_another_sort_is_refused(client, world):
    coop = await world.cooperative()
    for _ in range(3):
        await world.product(coop)
    cursor = (await client.get("/v1/products", params={"limit": 1})).json()["next_cursor"]
    response = await client.get("/v1/products", params={"cursor": cursor, "sort": "price_asc"})
    assert response.status_code == 422
    assert response.json()["field"] == "cursor"


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"min_price": -1},
        {"sort": "random"},
        {"region": "99"},
        {"certified": "maybe"},
        {"q": ""},
        {"q": "x" * 101},
    ],
)
async def test_bad_query_parameters_are_422(client, params):
    response = await client.get("/v1/products", params=params)
    assert response.status_code == 422
    assert response.json()["field"] == next(iter(params))


async def test_product_etag_and_conditional_get(client, shelf, users, world):
    url = f"/v1/products/{shelf['chicken']}"
    first = await client.get(url)
    etag = first.headers["etag"]
    again = await client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    await catalog.update_product(
        users.session,
        world.admin,
        uuid.UUID(shelf["chicken"]),
        {"stock": 3},
    )
    changed = await client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag


async def test_search_and_listing_use_indexes(connection, shelf):
    """On a catalogue of realistic size the planner answers from the indexes."""
    await connection.execute(
        text("""
        INSERT INTO products (id, cooperative_id, county_code, title, description, category,
                              unit, price_fen, stock, origin_village_code, status)
        SELECT gen_random_uuid(), cooperative_id, county_code,
               (ARRAY['核桃','小米','香菇','脐橙','黑木耳'])[1 + n % 5] || ' 批次' || n,
               'batch ' || n, category, unit, 1000 + n, n % 7, origin_village_code, 'active'
        FROM products, generate_series(1, 20000) AS n
        WHERE id = :id
    """),
        {"id": shelf["eggs"]},
    )
    await connection.execute(text("ANALYZE products"))
    await connection.execute(text("ANALYZE cooperatives"))

    async def plan(**params: Any) -> str:
        stmt = catalog.catalogue_statement(catalog.CatalogueQuery(**params), today=date.today())
        sql = stmt.limit(21).compile(
            dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
        )
        return "\n".join(row[0] for row in await connection.execute(text(f"EXPLAIN {sql}")))

    for words in ("河田鸡", "批次4999", "hetian"):
        search = await plan(q=words)
        assert "ix_products_search_terms" in search, search
    assert "ix_products_active_newest" in await plan()
    assert "ix_products_active_price" in await plan(sort=catalog.Sort.price_asc)


async def test_catalogue_pages_are_reused_for_a_few_seconds_then_refreshed(app, client, world):
    from app.cache import PageCache

    clock = [0.0]
    app.state.catalogue_cache = PageCache(2, timer=lambda: clock[0])
    coop = await world.cooperative()
    first = await world.product(coop, title="第一批核桃")
    page = await client.get("/v1/products", params={"q": "核桃"})
    assert page.headers["cache-control"] == "public, max-age=2"
    assert [p["id"] for p in page.json()["items"]] == [str(first.id)]
    second = await world.product(coop, title="第二批核桃")
    cached = await client.get("/v1/products", params={"q": "核桃"})
    assert cached.json() == page.json(), "within the TTL the rendered page is reused"
    other_query = await client.get("/v1/products", params={"q": "核桃", "limit": 5})
    assert len(other_query.json()["items"]) == 2, "another query string is another page"
    clock[0] = 2.5
    fresh = await client.get("/v1/products", params={"q": "核桃"})
    assert {p["id"] for p in fresh.json()["items"]} == {str(first.id), str(second.id)}


async def test_requests_missing_the_cache_together_share_one_rendering():
    import asyncio

    from app.cache import PageCache

    cache = PageCache(2)
    renders = 0
    gate = asyncio.Event()

    async def render() -> bytes:
        nonlocal renders
        renders += 1
        await gate.wait()
        return b"page"

    waiting = [asyncio.create_task(cache.get_or_render("q=1", render)) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [b"page"] * 10
    assert renders == 1
    assert await cache.get_or_render("q=1", render) == b"page"
    assert renders == 1
