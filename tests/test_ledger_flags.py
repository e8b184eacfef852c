"""Self-dealing and anomaly flags: which purchases are held back, rulings, who sees them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, text, update

from app.api.attribution import policy_from
from app.cli import _recognise_backlog
from app.settings import Settings
from services.households.models import Household
from services.jobs.models import Job
from services.jobs.registry import load_handlers
from services.jobs.worker import Worker
from services.ledger import audit, flag_rules, flags, totals
from services.ledger import service as ledger
from services.ledger.flags import FlagPolicy
from services.ledger.models import (
    AttributionFlag,
    FlagLine,
    FlagRule,
    FlagStatus,
    LedgerEntry,
    Payout,
    Recognition,
    Ruling,
)
from services.orders.models import Fulfilment, Order, OrderLine
from services.users.models import Role
from tests.committed import CommittingUsers, committed_app, wait_for_a_lock_wait
from tests.ledger_helpers import delivered_cod_order, recognise, supplied_product
from tests.orders_helpers import ADDRESS
from tests.test_ledger import refund

SUPPLIER_PHONE = "13900001234"


@pytest.fixture(autouse=True)
def default_policy() -> Iterator[None]:
    """Tests that shrink the thresholds leave the default behind for the next one."""
    yield
    flags.use_policy(FlagPolicy())


def home(**address: Any) -> dict[str, Any]:
    return {"type": "home", "address": {**ADDRESS, **address}}


async def shelf(world: Any) -> dict[str, Any]:
    """A cooperative whose product two households supply (60% and 25%)."""
    coop = await world.cooperative()
    a = await world.household(head="李春花")
    b = await world.household(head="赵秋生")
    product = await supplied_product(world, coop, [(a, 6000), (b, 2500)])
    return {"coop": coop, "a": a, "b": b, "product": product}


async def set_contact(session: Any, household: Household, **fields: str) -> None:
    for name, value in fields.items():
        setattr(household, name, value)
    await session.flush()


async def buy(client: Any, users: Any, session: Any, product: Any, qty: int = 1, **kw: Any) -> Any:
    order = await delivered_cod_order(client, users, [(product, qty)], **kw)
    await recognise(session, order)
    return order


async def all_flags(session: Any, rule: FlagRule | None = None) -> list[AttributionFlag]:
    stmt = select(AttributionFlag).order_by(AttributionFlag.created_at, AttributionFlag.id)
    if rule is not None:
        stmt = stmt.where(AttributionFlag.rule == rule)
    return list((await session.scalars(stmt.execution_options(populate_existing=True))).all())


async def covered(session: Any, flag: AttributionFlag) -> set[tuple[uuid.UUID, uuid.UUID]]:
    rows = await session.execute(
        select(FlagLine.line_id, FlagLine.household_id).where(FlagLine.flag_id == flag.id)
    )
    return set(rows.all())


async def counted_fen(session: Any, household: Household) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_fen), 0)).where(
            LedgerEntry.household_id == household.id, flags.counted()
        )
    )
    return int(total)


async def ledger_fen(session: Any, household: Household) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_fen), 0)).where(
            LedgerEntry.household_id == household.id
        )
    )
    return int(total)


def line_ids(order: dict[str, Any]) -> list[uuid.UUID]:
    return [uuid.UUID(line["id"]) for f in order["fulfilments"] for line in f["lines"]]


async def deliver_at(session: Any, order: dict[str, Any], at: datetime) -> None:
    """Back-date delivery and cash collection, set directly in the database before the order
    is recognised: recognition dates the income from them (ledger.recognition_time)."""
    await session.execute(
        update(Fulfilment)
        .where(Fulfilment.order_id == uuid.UUID(order["id"]))
        .values(delivered_at=at)
    )
    await session.execute(
        update(Order).where(Order.id == uuid.UUID(order["id"])).values(paid_at=at)
    )


# --- supplier_household -------------------------------------------------------------------


async def test_a_buyer_with_a_supplying_households_phone_is_flagged_for_every_household(
    client, users, world, session
) -> None:
    s = await shelf(world)
    await set_contact(session, s["a"], phone=SUPPLIER_PHONE)
    buyer = await users.make(Role.buyer, phone="+86 139 0000 1234")
    order = await buy(client, users, session, s["product"], buyer=buyer)

    [flag] = await all_flags(session)
    assert flag.rule is FlagRule.supplier_household and flag.status is FlagStatus.open
    assert (flag.household_id, flag.buyer_id) == (s["a"].id, buyer.id)
    assert flag.order_id == uuid.UUID(order["id"]) and flag.cooperative_id == s["coop"].id
    assert flag.county_code == world.county.county
    assert flag.detail["matched"] == "phone"
    assert flag.detail["matches"] == [
        {"matched": "phone", "via": "buyer_account", "phone": "*******1234"}
    ]
    [line] = line_ids(order)
    assert await covered(session, flag) == {(line, s["a"].id), (line, s["b"].id)}


async def test_delivery_to_a_members_name_in_the_households_village_is_flagged(
    client, users, world, session
) -> None:
    s = await shelf(world)
    # The street names the village (上坪村) and no region code is given.
    await buy(client, users, session, s["product"], delivery=home(recipient="李春花"))
    [flag] = await all_flags(session)
    assert flag.rule is FlagRule.supplier_household and flag.household_id == s["a"].id
    assert flag.detail["matched"] == "member_name"


async def test_delivery_to_the_households_address_is_flagged(client, users, world, session):
    s = await shelf(world)
    await set_contact(session, s["b"], address="示范省示范市青溪县河田镇上坪村3组12号")
    await buy(client, users, session, s["product"])  # street: 河田镇上坪村 3 组 12 号
    [flag] = await all_flags(session)
    assert flag.household_id == s["b"].id and flag.detail["matched"] == "address"


async def test_an_honest_purchase_raises_no_flag(client, users, world, session) -> None:
    s = await shelf(world)
    await set_contact(session, s["a"], phone=SUPPLIER_PHONE, address="河田镇上坪村5组1号")
    # A namesake of a member, but delivered to another village.
    delivery = home(recipient="李春花", region_code=world.county.village2)
    buyer = await users.make(Role.buyer, phone="13700009999")
    order = await buy(client, users, session, s["product"], buyer=buyer, delivery=delivery)
    assert await all_flags(session) == []
    assert await counted_fen(session, s["a"]) == await ledger_fen(session, s["a"]) > 0
    assert await flags.flags_of_lines(session, [(line_ids(order)[0], s["a"].id)]) == {}


# --- cooperative_insider ------------------------------------------------------------------


async def test_a_purchase_delivered_to_a_managers_phone_is_flagged(
    client, users, world, session
) -> None:
    s = await shelf(world)
    await users.make(Role.manager, cooperative_id=s["coop"].id, phone="13600007777")
    order = await buy(client, users, session, s["product"], delivery=home(phone="136-0000-7777"))
    [flag] = await all_flags(session)
    assert flag.rule is FlagRule.cooperative_insider and flag.household_id is None
    assert flag.cooperative_id == s["coop"].id
    assert flag.detail["matches"] == [
        {"matched": "manager_phone", "via": "delivery_address", "phone": "*******7777"}
    ]
    [line] = line_ids(order)
    assert await covered(session, flag) == {(line, s["a"].id), (line, s["b"].id)}


async def test_a_member_household_of_the_seller_buying_is_flagged(client, users, world, session):
    s = await shelf(world)
    member = await world.household(head="孙冬梅")
    await world.member(s["coop"], member)  # a member, not a supplier of this product
    await set_contact(session, member, phone="13500005555")
    buyer = await users.make(Role.buyer, phone="13500005555")
    await buy(client, users, session, s["product"], buyer=buyer)
    [flag] = await all_flags(session)
    assert flag.rule is FlagRule.cooperative_insider and flag.household_id == member.id
    assert flag.detail["matched"] == "member_phone"


async def test_the_contact_of_another_cooperative_is_no_insider(client, users, world, session):
    s = await shelf(world)
    other = await world.cooperative(contact_phone="13400004444")
    await users.make(Role.manager, cooperative_id=other.id, phone="13400004444")
    await buy(client, users, session, s["product"], delivery=home(phone="13400004444"))
    assert await all_flags(session) == []


# --- dominant_buyer -----------------------------------------------------------------------


async def test_one_buyer_giving_most_of_a_households_year_is_flagged(
    client, users, world, session
) -> None:
    flags.use_policy(FlagPolicy(dominant_buyer_min_fen=500))
    s = await shelf(world)
    buyer = await users.make(Role.buyer)
    first = await buy(client, users, session, s["product"], buyer=buyer)
    [flag_a, flag_b] = sorted(
        await all_flags(session, FlagRule.dominant_buyer), key=lambda f: f.household_id == s["b"].id
    )
    assert (flag_a.household_id, flag_a.buyer_id) == (s["a"].id, buyer.id)
    assert flag_a.detail["share_bp"] == 10_000 and flag_a.detail["threshold_bp"] == 5_000
    assert await covered(session, flag_a) == {(line_ids(first)[0], s["a"].id)}
    assert flag_b.household_id == s["b"].id

    # The same buyer's later purchase joins the same flag.
    second = await buy(client, users, session, s["product"], buyer=buyer)
    assert len(await all_flags(session)) == 2
    assert await covered(session, flag_a) == {
        (line_ids(first)[0], s["a"].id),
        (line_ids(second)[0], s["a"].id),
    }


async def test_a_households_first_small_sale_is_not_a_dominant_buyer(
    client, users, world, session
) -> None:
    s = await shelf(world)  # default policy: 1,000 yuan a year before the rule applies
    await buy(client, users, session, s["product"], qty=3)
    assert await all_flags(session) == []


async def sole_supply(world: Any, head: str, *, min_fen: int = 500) -> tuple[Household, Any]:
    """A household that supplies all of a product; the dominant-buyer rule from `min_fen`."""
    flags.use_policy(FlagPolicy(dominant_buyer_min_fen=min_fen))
    coop = await world.cooperative()
    household = await world.household(head=head)
    return household, await supplied_product(world, coop, [(household, 10_000)])


async def test_buyers_giving_no_more_than_the_share_are_not_flagged(
    client, users, world, session
) -> None:
    _, product = await sole_supply(world, "周明", min_fen=3_000)
    first, second = await users.make(Role.buyer), await users.make(Role.buyer)
    # The first purchase alone is below the minimum; after the second, each gives half.
    await buy(client, users, session, product, buyer=first)
    await buy(client, users, session, product, buyer=second)
    assert await all_flags(session) == []


async def history(session: Any, flag: AttributionFlag) -> list[tuple[str, uuid.UUID | None]]:
    rows = await session.execute(
        select(Ruling.ruling, Ruling.officer_id)
        .where(Ruling.flag_id == flag.id)
        .order_by(Ruling.id)
    )
    return [(ruling.value, officer) for ruling, officer in rows.all()]


async def test_a_dominant_buyers_flag_is_withdrawn_when_the_share_falls_and_opened_when_it_rises(
    client, users, world, session
) -> None:
    a, product = await sole_supply(world, "孙丽")
    x, y = await users.make(Role.buyer), await users.make(Role.buyer)
    first = await buy(client, users, session, product, buyer=x)
    [flag] = await all_flags(session, FlagRule.dominant_buyer)
    assert (flag.buyer_id, flag.status) == (x.id, FlagStatus.open)
    assert await counted_fen(session, a) == 0

    # Another buyer's purchase brings x down to half, which is not more than half.
    await buy(client, users, session, product, buyer=y)
    [flag] = await all_flags(session, FlagRule.dominant_buyer)
    assert flag.status is FlagStatus.withdrawn
    assert flag.ruled_by is None and flag.ruled_at is not None
    assert "5000 basis points" in (flag.ruling_reason or "")
    assert await counted_fen(session, a) == await ledger_fen(session, a) == 4_750
    assert await history(session, flag) == [("withdrawn", None)]

    # x buys again: two thirds of the year, so the flag opens again and holds all of x's lines.
    third = await buy(client, users, session, product, buyer=x)
    [flag] = await all_flags(session, FlagRule.dominant_buyer)
    assert flag.status is FlagStatus.open
    assert flag.detail["share_bp"] == 6_666
    assert await covered(session, flag) == {
        (line_ids(first)[0], a.id),
        (line_ids(third)[0], a.id),
    }
    assert await counted_fen(session, a) == 2_375  # y's purchase only
    assert await history(session, flag) == [("withdrawn", None), ("open", None)]


async def test_an_officers_ruling_stands_whatever_the_rule_finds_later(
    client, users, world, session
) -> None:
    _, product = await sole_supply(world, "钱进")
    x = await users.make(Role.buyer)
    await buy(client, users, session, product, buyer=x)
    [flag] = await all_flags(session, FlagRule.dominant_buyer)
    assert (await rule_on(client, users, flag, "excluded", reason="a relative")).status_code == 200
    await buy(client, users, session, product, qty=3)  # x's share falls to a quarter
    [flag] = [f for f in await all_flags(session, FlagRule.dominant_buyer) if f.buyer_id == x.id]
    assert flag.status is FlagStatus.excluded and flag.ruling_reason == "a relative"
    assert [ruling for ruling, _ in await history(session, flag)] == ["excluded"]


async def test_a_refund_after_recognition_judges_the_households_year_again(
    client, users, world, session
) -> None:
    a, product = await sole_supply(world, "郑和")
    x, y = await users.make(Role.buyer), await users.make(Role.buyer)
    await buy(client, users, session, product, buyer=x)
    bulk = await buy(client, users, session, product, qty=2, buyer=y)
    by_buyer = {f.buyer_id: f for f in await all_flags(session, FlagRule.dominant_buyer)}
    assert (by_buyer[x.id].status, by_buyer[y.id].status) == (FlagStatus.withdrawn, FlagStatus.open)

    # y's purchase is refunded whole: x is all of the year again.
    line = line_ids(bulk)[0]
    coop = str(product.cooperative_id)
    await refund(client, users, bulk, coop, lines=[{"line_id": str(line), "quantity": 2}])
    by_buyer = {f.buyer_id: f for f in await all_flags(session, FlagRule.dominant_buyer)}
    assert (by_buyer[x.id].status, by_buyer[y.id].status) == (FlagStatus.open, FlagStatus.withdrawn)
    assert await ledger_fen(session, a) == 2_375 and await counted_fen(session, a) == 0


@pytest.mark.parametrize("order", ["xyz", "zyx", "yxz", "yzx"])
async def test_what_assessment_counts_does_not_depend_on_the_order_of_recognition(
    client, users, world, session, order
) -> None:
    """x buys three units, y and z one each: at the end x gives 60% of the household's year,
    whichever purchase was recognised first (each one, alone, was all of the year)."""
    a, product = await sole_supply(world, "冯云")
    buyers = {name: await users.make(Role.buyer) for name in "xyz"}
    orders = {
        name: await delivered_cod_order(
            client, users, [(product, 3 if name == "x" else 1)], buyer=buyers[name]
        )
        for name in "xyz"
    }
    for name in order:
        await recognise(session, orders[name])
    holding = [
        f for f in await all_flags(session, FlagRule.dominant_buyer) if f.status is FlagStatus.open
    ]
    assert [f.buyer_id for f in holding] == [buyers["x"].id]
    assert await covered(session, holding[0]) == {(line_ids(orders["x"])[0], a.id)}
    assert await ledger_fen(session, a) == 11_875
    assert await counted_fen(session, a) == 4_750  # y's and z's


# --- pre_assessment_spike -----------------------------------------------------------------


async def spike_setup(client, users, world, session, *, earlier: int, late: int) -> Any:
    flags.use_policy(FlagPolicy(spike_min_fen=1_000))
    coop = await world.cooperative()
    a = await world.household(head="吴强")
    product = await supplied_product(world, coop, [(a, 10_000)], price_fen=2_500)
    spring = await delivered_cod_order(client, users, [(product, earlier)])
    await deliver_at(session, spring, datetime(2025, 3, 1, 4, tzinfo=UTC))
    await recognise(session, spring)
    december = await delivered_cod_order(client, users, [(product, late)])
    await deliver_at(session, december, datetime(2025, 12, 20, 4, tzinfo=UTC))
    await recognise(session, december)
    return a, spring, december


async def test_a_jump_in_the_weeks_before_the_assessment_date_is_flagged(
    client, users, world, session
) -> None:
    a, _, december = await spike_setup(client, users, world, session, earlier=1, late=10)
    [flag] = await all_flags(session)
    assert flag.rule is FlagRule.pre_assessment_spike
    assert (flag.household_id, flag.year, flag.buyer_id) == (a.id, 2025, None)
    assert flag.detail["window_fen"] == 23_750  # 10 x 25.00 yuan less the 5% fee
    assert flag.detail["window_start"] == "2025-12-04T00:00:00+08:00"
    assert await covered(session, flag) == {(line_ids(december)[0], a.id)}
    assert await counted_fen(session, a) == 2_375  # the spring sale only


async def test_steady_income_before_the_assessment_date_is_no_spike(
    client, users, world, session
) -> None:
    await spike_setup(client, users, world, session, earlier=10, late=1)
    assert await all_flags(session) == []


async def test_income_before_the_window_recognised_late_withdraws_the_spike(
    client, users, world, session
) -> None:
    """The December sale recognised first looks like a jump (nothing earlier yet); the spring
    sale, recognised after it, shows steady income, as in the test above."""
    flags.use_policy(FlagPolicy(spike_min_fen=1_000))
    coop = await world.cooperative()
    a = await world.household(head="吴强")
    product = await supplied_product(world, coop, [(a, 10_000)], price_fen=2_500)
    spring = await delivered_cod_order(client, users, [(product, 10)])
    await deliver_at(session, spring, datetime(2025, 3, 1, 4, tzinfo=UTC))
    december = await delivered_cod_order(client, users, [(product, 1)])
    await deliver_at(session, december, datetime(2025, 12, 20, 4, tzinfo=UTC))
    await recognise(session, december)
    [flag] = await all_flags(session)
    assert (flag.rule, flag.status) == (FlagRule.pre_assessment_spike, FlagStatus.open)
    assert await counted_fen(session, a) == 0

    await recognise(session, spring)
    [flag] = await all_flags(session)
    assert flag.status is FlagStatus.withdrawn
    assert (flag.ruling_reason or "").startswith("Withdrawn by the rule: 2375 fen in the window")
    assert await counted_fen(session, a) == await ledger_fen(session, a) == 26_125
    assert await history(session, flag) == [("withdrawn", None)]


# --- counting and rulings -----------------------------------------------------------------


async def flagged_sale(client, users, world, session) -> dict[str, Any]:
    s = await shelf(world)
    await set_contact(session, s["a"], phone=SUPPLIER_PHONE)
    s["order"] = await buy(
        client, users, session, s["product"], delivery=home(phone=SUPPLIER_PHONE)
    )
    [s["flag"]] = await all_flags(session)
    return s


async def rule_on(client, users, flag, ruling: str, officer=None, reason: str = "checked") -> Any:
    officer = officer or await users.make(Role.officer)
    return await client.post(
        f"/v1/attribution/flags/{flag.id}/ruling",
        json={"ruling": ruling, "reason": reason},
        headers=users.auth(officer),
    )


async def test_flagged_income_counts_only_once_ruled_counted(client, users, world, session):
    s = await flagged_sale(client, users, world, session)
    a, b = s["a"], s["b"]
    assert await ledger_fen(session, a) == 1_425 and await ledger_fen(session, b) == 594
    assert await counted_fen(session, a) == 0 and await counted_fen(session, b) == 0

    excluded = await rule_on(client, users, s["flag"], "excluded", reason="his own phone")
    assert excluded.status_code == 200, excluded.text
    assert excluded.json()["status"] == "excluded"
    assert await counted_fen(session, a) == 0

    officer = await users.make(Role.officer)
    answer = await rule_on(client, users, s["flag"], "counted", officer, reason="phone reused")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "counted" and body["ruling_reason"] == "phone reused"
    assert body["ruled_by"] == str(officer.id) and body["ruled_at"] and body["lines"] == 1
    assert await counted_fen(session, a) == 1_425 and await counted_fen(session, b) == 594

    rulings = (
        await session.scalars(
            select(Ruling).where(Ruling.flag_id == s["flag"].id).order_by(Ruling.id)
        )
    ).all()
    assert [(r.ruling, r.reason) for r in rulings] == [
        (FlagStatus.excluded, "his own phone"),
        (FlagStatus.counted, "phone reused"),
    ]
    shown = await flags.flags_of_lines(session, [(line_ids(s["order"])[0], a.id)])
    assert [f.status for f in shown[(line_ids(s["order"])[0], a.id)]] == [FlagStatus.counted]


async def test_officers_list_their_countys_flags(client, users, world, session) -> None:
    s = await flagged_sale(client, users, world, session)
    officer = await users.make(Role.officer)
    listed = await client.get("/v1/attribution/flags", headers=users.auth(officer))
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["items"]
    assert item["id"] == str(s["flag"].id) and item["rule"] == "supplier_household"
    assert item["status"] == "open" and item["lines"] == 1 and item["year"]
    for query, expected in [("status=open", 1), ("status=counted", 0), ("rule=dominant_buyer", 0)]:
        page = await client.get(f"/v1/attribution/flags?{query}", headers=users.auth(officer))
        assert len(page.json()["items"]) == expected, query
    admin = await client.get("/v1/attribution/flags", headers=users.auth(world.admin))
    assert [i["id"] for i in admin.json()["items"]] == [str(s["flag"].id)]


async def test_the_list_pages_by_cursor(client, users, world, session) -> None:
    s = await shelf(world)
    await set_contact(session, s["a"], phone=SUPPLIER_PHONE)
    for _ in range(3):
        await buy(client, users, session, s["product"], delivery=home(phone=SUPPLIER_PHONE))
    officer = await users.make(Role.officer)
    seen, cursor = [], None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await client.get(f"/v1/attribution/flags?{query}", headers=users.auth(officer))
        seen += [i["id"] for i in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(str(f.id) for f in await all_flags(session)) and len(seen) == 3


async def test_another_countys_officer_neither_sees_nor_rules(client, users, world, session):
    s = await flagged_sale(client, users, world, session)
    stranger = await users.make(Role.officer, county_code=world.county.other_county)
    listed = await client.get("/v1/attribution/flags", headers=users.auth(stranger))
    assert listed.status_code == 200 and listed.json()["items"] == []
    answer = await rule_on(client, users, s["flag"], "counted", stranger)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert (await all_flags(session))[0].status is FlagStatus.open


@pytest.mark.parametrize("role", [Role.buyer, Role.manager])
async def test_buyers_and_managers_may_not_review(client, users, world, session, role) -> None:
    s = await flagged_sale(client, users, world, session)
    user = await users.make(role)
    listed = await client.get("/v1/attribution/flags", headers=users.auth(user))
    assert listed.status_code == 403
    ruled = await client.post(
        f"/v1/attribution/flags/{s['flag'].id}/ruling",
        json={"ruling": "counted", "reason": "mine"},
        headers=users.auth(user),
    )
    assert ruled.status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ruling": "open", "reason": "undo"}, "ruling"),
        ({"ruling": "withdrawn", "reason": "the rule's own verdict"}, "ruling"),
        ({"ruling": "counted", "reason": "  "}, "reason"),
        ({"ruling": "counted", "reason": "x" * 501}, "reason"),
        ({"ruling": "counted"}, "reason"),
    ],
)
async def test_a_ruling_needs_a_verdict_and_a_reason(client, users, world, session, body, field):
    s = await flagged_sale(client, users, world, session)
    officer = await users.make(Role.officer)
    answer = await client.post(
        f"/v1/attribution/flags/{s['flag'].id}/ruling", json=body, headers=users.auth(officer)
    )
    assert answer.status_code == 422 and answer.json()["field"] == field


async def test_ruling_on_an_unknown_flag_is_not_found(client, users, world) -> None:
    officer = await users.make(Role.officer)
    answer = await client.post(
        f"/v1/attribution/flags/{uuid.uuid4()}/ruling",
        json={"ruling": "excluded", "reason": "?"},
        headers=users.auth(officer),
    )
    assert answer.status_code == 404


# --- locking ------------------------------------------------------------------------------


async def test_households_are_locked_by_bucket_so_a_large_batch_fits_the_lock_table(
    client, users, world, session, monkeypatch
) -> None:
    # One advisory lock per household let two backlog batches of thousands of households
    # fill PostgreSQL's shared lock table ("out of shared memory").
    monkeypatch.setattr(totals, "HOUSEHOLD_LOCK_BUCKETS", 4)
    coop = await world.cooperative()
    households = [await world.household() for _ in range(12)]
    product = await supplied_product(world, coop, [(h, 500) for h in households])
    await buy(client, users, session, product)
    held = await session.scalar(
        text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND pid = pg_backend_pid() AND granted"
        )
    )
    assert held == len(totals.household_lock_buckets(h.id for h in households))
    assert 1 <= held <= 4


# --- exactly once -------------------------------------------------------------------------


async def replay(session: Any, order: dict[str, Any]) -> list[ledger.RecognisedLine]:
    """The lines of an order as recognition handed them to its followers."""
    held = await ledger.holdings(session, line_ids(order))
    out = []
    for line_id in line_ids(order):
        line = await session.get(OrderLine, line_id)
        at = (await session.get(Recognition, line.fulfilment_id)).recognised_at
        out.append(
            ledger.RecognisedLine(
                line_id=line.id,
                order_id=line.order_id,
                fulfilment_id=line.fulfilment_id,
                product_id=line.product_id,
                cooperative_id=line.cooperative_id,
                county_code=line.county_code,
                buyer_id=order["buyer"].id,
                currency=order["currency"],
                effective_at=at,
                year=ledger.assessment_year(at),
                net_fen=sum(held[line.id].values()),
                parts=held[line.id],
            )
        )
    return out


async def test_recognising_or_reviewing_again_raises_no_second_flag(
    client, users, world, session
) -> None:
    flags.use_policy(FlagPolicy(dominant_buyer_min_fen=1_000))
    s = await shelf(world)
    await set_contact(session, s["a"], phone=SUPPLIER_PHONE)
    await users.make(Role.manager, cooperative_id=s["coop"].id, phone=SUPPLIER_PHONE)
    order = await buy(client, users, session, s["product"], delivery=home(phone=SUPPLIER_PHONE))
    before = {(f.rule, f.household_id) for f in await all_flags(session)}
    assert {rule for rule, _ in before} >= {
        FlagRule.supplier_household,
        FlagRule.cooperative_insider,
        FlagRule.dominant_buyer,
    }
    lines_before = await session.scalar(select(func.count()).select_from(FlagLine))

    assert await recognise(session, order) == 0
    for _ in range(2):
        lines, now = await replay(session, order), datetime.now(UTC)
        await flag_rules.review_purchases(session, lines, now)
        await flag_rules.review_anomalies(session, lines, now)
    after = await all_flags(session)
    assert len(after) == len(before)
    assert await session.scalar(select(func.count()).select_from(FlagLine)) == lines_before


# --- settings -----------------------------------------------------------------------------


def test_the_policy_follows_the_settings(settings: Settings) -> None:
    configured = settings.model_copy(
        update={"assessment_date": "06-30", "flag_spike_weeks": 2, "flag_dominant_buyer_bp": 7000}
    )
    policy = policy_from(configured)
    assert policy.assessment_date == (6, 30) and policy.spike_weeks == 2
    assert policy.dominant_buyer_bp == 7000
    assert policy_from(settings) == FlagPolicy()
    assert FlagPolicy(assessment_date=(2, 29)).window(2025)[1].day == 1  # 28 Feb, to 1 March


@pytest.mark.parametrize("value", ["02-30", "13-01", "1231", "12/31", ""])
def test_an_assessment_date_must_be_a_day(settings: Settings, value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(**{**settings.model_dump(), "assessment_date": value})


# --- concurrent recognitions --------------------------------------------------------------


@pytest.fixture
async def live(server_url: str, tmp_path: Any) -> AsyncIterator[dict[str, Any]]:
    """An app on a database of its own, where transactions really commit and race."""
    async with (
        committed_app(server_url, tmp_path, prefix="marketplace_flags") as own,
        own.app.state.sessionmaker() as session,
    ):
        yield {
            "client": own.client,
            "factory": own.app.state.sessionmaker,
            "session": session,
            "settings": own.settings,
        }


async def live_sole_supply(live: dict[str, Any], head: str) -> tuple[Any, Household, Any]:
    """Committing users, and a household that supplies all of a product, committed."""
    users = CommittingUsers(live["session"], live["settings"])
    world = await users.builder()
    coop = await world.cooperative()
    household = await world.household(head=head)
    product = await supplied_product(world, coop, [(household, 10_000)])
    await live["session"].commit()
    return users, household, product


async def recognise_alone(live: dict[str, Any], fulfilment_id: str) -> int:
    """One fulfilment alone recognised in a transaction of its own."""
    async with live["factory"]() as session, session.begin():
        return await ledger.recognise_delivered(
            session, uuid.UUID(fulfilment_id), now=datetime.now(UTC), sweep=0
        )


async def test_concurrent_recognitions_see_each_others_income(live) -> None:
    users, household, product = await live_sole_supply(live, "郑和平")
    buyer = await users.make(Role.buyer)
    orders = [
        await delivered_cod_order(live["client"], users, [(product, 1)], buyer=buyer)
        for _ in range(2)
    ]
    # Each sale alone (23.75 yuan) is under the minimum; both together are over it.
    flags.use_policy(FlagPolicy(dominant_buyer_min_fen=3_000))

    done = await asyncio.gather(
        *(recognise_alone(live, o["fulfilments"][0]["id"]) for o in orders),
        *(recognise_alone(live, o["fulfilments"][0]["id"]) for o in orders),
    )
    assert sorted(done) == [0, 0, 1, 1]
    async with live["factory"]() as session:
        [flag] = await all_flags(session)
        assert (flag.rule, flag.household_id, flag.buyer_id) == (
            FlagRule.dominant_buyer,
            household.id,
            buyer.id,
        )
        assert await covered(session, flag) == {(line_ids(o)[0], household.id) for o in orders}


async def recognise_delivered_alone(live: dict[str, Any], fulfilment_id: str) -> int:
    """What a delivery's outbox job does, in a transaction of its own."""
    async with live["factory"]() as session, session.begin():
        return await ledger.recognise_delivered(
            session, uuid.UUID(fulfilment_id), now=datetime.now(UTC)
        )


async def test_a_deliverys_job_does_not_wait_for_an_order_another_holds(live) -> None:
    """The job waits for its own order only: a due fulfilment whose order another
    transaction holds is left for its own job, however long the other keeps it."""
    users, _, product = await live_sole_supply(live, "孙有田")
    first, second = [
        await delivered_cod_order(live["client"], users, [(product, 1)]) for _ in range(2)
    ]
    async with live["factory"]() as holder, holder.begin():
        await holder.execute(
            select(Order.id).where(Order.id == uuid.UUID(second["id"])).with_for_update()
        )
        took = await asyncio.wait_for(
            recognise_delivered_alone(live, first["fulfilments"][0]["id"]), timeout=30
        )
    assert took == 1
    assert await recognise_delivered_alone(live, second["fulfilments"][0]["id"]) == 1
    async with live["factory"]() as session:
        assert await session.scalar(select(func.count()).select_from(Recognition)) == 2


async def test_delivery_jobs_running_at_once_recognise_each_fulfilment_once(live) -> None:
    """Six delivery jobs claimed and run at once, as a worker does: the first to run takes
    the others' fulfilments along, and every fulfilment enters the ledger once."""
    users, household, product = await live_sole_supply(live, "钱小满")
    orders = [await delivered_cod_order(live["client"], users, [(product, 1)]) for _ in range(6)]
    worker = Worker(live["factory"], load_handlers(), concurrency=6)
    jobs = await worker.claim(6)
    assert sorted(j.payload["fulfilment_id"] for j in jobs) == sorted(
        o["fulfilments"][0]["id"] for o in orders
    )
    await asyncio.gather(*(worker.execute(job) for job in jobs))
    async with live["factory"]() as session:
        assert await session.scalar(select(func.count()).select_from(Recognition)) == 6
        unfinished = await session.scalar(
            select(func.count()).select_from(Job).where(Job.finished_at.is_(None))
        )
        assert unfinished == 0
        for order in orders:
            parts = (
                await session.execute(
                    select(LedgerEntry.household_id, LedgerEntry.amount_fen).where(
                        LedgerEntry.order_id == uuid.UUID(order["id"])
                    )
                )
            ).all()
            assert sorted(parts, key=str) == sorted([(household.id, 2_375)], key=str)


async def test_the_rule_does_not_withdraw_a_flag_an_officer_ruled_while_it_ran(live) -> None:
    """The recognition read the flag as open, then waits for its row while an officer's
    ruling holds it; after the ruling commits, the withdrawal finds it ruled and leaves it."""
    users, _, product = await live_sole_supply(live, "陈默")
    flags.use_policy(FlagPolicy(dominant_buyer_min_fen=500))
    x = await users.make(Role.buyer)
    first = await delivered_cod_order(live["client"], users, [(product, 1)], buyer=x)
    # y's purchase brings x to half: recognising it would withdraw x's flag.
    other = await delivered_cod_order(live["client"], users, [(product, 1)])
    officer = await users.make(Role.officer)
    await recognise_alone(live, first["fulfilments"][0]["id"])
    async with live["factory"]() as session:
        [flag] = await all_flags(session, FlagRule.dominant_buyer)
    assert flag.status is FlagStatus.open
    async with live["factory"]() as ruling, ruling.begin():
        await flags.rule(
            ruling,
            officer,
            flag.id,
            ruling=FlagStatus.excluded,
            reason="his cousin",
            now=datetime.now(UTC),
        )
        recognition = asyncio.create_task(recognise_alone(live, other["fulfilments"][0]["id"]))
        await wait_for_a_lock_wait(live["factory"], "the recognition did not wait for the ruling")
    assert await recognition == 1
    async with live["factory"]() as session:
        [flag] = await all_flags(session, FlagRule.dominant_buyer)
        steps = await history(session, flag)
    assert (flag.status, flag.ruled_by, flag.ruling_reason) == (
        FlagStatus.excluded,
        officer.id,
        "his cousin",
    )
    assert steps == [("excluded", officer.id)]


async def test_a_batch_may_raise_more_flags_than_one_statement_carries(session) -> None:
    """A backlog batch of 20,000 fulfilments can raise thousands of flags: more rows than
    one multi-row INSERT of eleven columns may bind (PostgreSQL's limit is 32,767)."""
    drafts = [
        flag_rules._Draft(
            FlagRule.pre_assessment_spike, f"bulk-test:{i:05d}", "990101000000", 2026, {"i": i}
        )
        for i in range(3_500)
    ]
    ids, created = await flag_rules._write(session, drafts)
    assert len(ids) == len(created) == 3_500
    again, created_again = await flag_rules._write(session, drafts)
    assert again == ids and not created_again


async def test_backlog_workers_recognise_every_fulfilment_once(live) -> None:
    """`marketplace ledger-recognise --workers 3 --batch-size 2`: three batches at once on
    connections of their own share the backlog; each fulfilment enters the ledger once."""
    users = CommittingUsers(live["session"], live["settings"])
    world = await users.builder()
    coop = await world.cooperative()
    a = await world.household(head="吴春生")
    b = await world.household(head="钱秋月")
    product = await supplied_product(world, coop, [(a, 3_000), (b, 1_500)])
    await live["session"].commit()
    orders = [await delivered_cod_order(live["client"], users, [(product, n)]) for n in range(1, 9)]

    await _recognise_backlog(live["settings"], batch_size=2, workers=3)

    async with live["factory"]() as session, session.begin():
        fulfilments = {uuid.UUID(o["fulfilments"][0]["id"]) for o in orders}
        assert set(await session.scalars(select(Recognition.fulfilment_id))) == fulfilments
        assert set(await session.scalars(select(Payout.fulfilment_id))) == fulfilments
        lines = (await session.scalars(select(OrderLine))).all()
        held = await session.scalar(select(func.sum(LedgerEntry.amount_fen)))
        assert held == sum(ledger.net_after(x.gross_fen, x.fee_fen, x.refunded_fen) for x in lines)
        assert await audit.audit(session, now=datetime.now(UTC)) == []


async def test_the_dominant_buyer_query_probes_each_households_top_buyers_in_any_plan(
    session,
) -> None:
    """The rule runs as a prepared statement, batch after batch; after a few runs PostgreSQL
    may keep one generic plan for it. That plan must still probe the buyers' totals by
    household and year (and amount, once they are large): probed by household alone, it read
    every buyer of every year of every touched household, hundreds of thousands of rows a
    backlog batch."""
    await session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
    await session.execute(
        text(f"PREPARE dominant(uuid[], smallint[], bigint, numeric) AS {flag_rules._DOMINANT}")
    )
    try:
        households = ",".join(str(uuid.uuid4()) for _ in range(3))
        plan = (
            await session.execute(
                text(
                    "EXPLAIN (FORMAT JSON) EXECUTE dominant("
                    f"'{{{households}}}', '{{2025,2025,2026}}', 100000, 5000)"
                )
            )
        ).scalar_one()
    finally:
        await session.execute(text("DEALLOCATE dominant"))

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    [scan] = [n for n in nodes(plan[0]["Plan"]) if n.get("Relation Name") == "ledger_buyer_years"]
    condition = scan.get("Index Cond", "")
    assert "household_id = t.household_id" in condition and "year = t.year" in condition
