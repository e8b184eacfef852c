"""Shipments through the API: registering parcels, signed pushes, manual events, who sees what."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from app.settings import Settings
from services.catalog.models import Product
from services.jobs.models import Job
from services.orders.models import Fulfilment
from services.orders.service import RECOGNITION_JOB
from services.payments import service as payments
from services.tracking.models import Shipment, ShipmentEvent, TrackingPush
from services.users.models import Role
from tests.fakes.tracking_pushes import aftership_push, beijing_time, kuaidi100_push
from tests.tracking_helpers import (
    AFTERSHIP_SECRET,
    KUAIDI100_SALT,
    cod_order,
    ship,
    with_providers,
)

NUMBER = "SF1234567890123"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return with_providers(settings)


def at(hours_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).isoformat()


async def push(client: Any, scans: Sequence[tuple[str, str, str | None]], **kw: Any) -> Any:
    body, headers = aftership_push(
        AFTERSHIP_SECRET,
        carrier=kw.pop("carrier", "sf"),
        number=kw.pop("number", NUMBER),
        checkpoints=scans,
        **kw,
    )
    return await client.post("/v1/webhooks/tracking/aftership", content=body, headers=headers)


async def event_count(session: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(ShipmentEvent)) or 0)


async def recognition_jobs(session: Any, fulfilment_id: str) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.kind == RECOGNITION_JOB, Job.dedupe_key == fulfilment_id)
        )
        or 0
    )


# --- registering parcels ----------------------------------------------------------------


async def test_first_parcel_ships_the_fulfilment_and_the_order(client, users, world) -> None:
    parcelled = await cod_order(client, users, world)
    shipment = await ship(client, users, parcelled, "sf 1234-5678-90123")
    assert shipment["tracking_number"] == NUMBER  # spaces and hyphens dropped
    assert shipment["status"] == "pending" and shipment["events"] == []
    order = (
        await client.get(f"/v1/orders/{parcelled.order['id']}", headers=users.auth(parcelled.buyer))
    ).json()
    assert order["status"] == "shipped"
    assert order["fulfilments"][0]["status"] == "shipped"


async def test_registering_the_same_parcel_again_changes_nothing(client, users, world) -> None:
    parcelled = await cod_order(client, users, world)
    first = await ship(client, users, parcelled)
    again = await client.post(
        f"/v1/fulfilments/{parcelled.fulfilment_id}/shipments",
        json={"carrier": "sf", "tracking_number": NUMBER},
        headers=users.auth(parcelled.manager),
    )
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]


async def test_a_tracking_number_belongs_to_one_parcel_per_carrier(client, users, world) -> None:
    one = await cod_order(client, users, world)
    other = await cod_order(client, users, world, cooperative=one.cooperative)
    await ship(client, users, one)
    response = await client.post(
        f"/v1/fulfilments/{other.fulfilment_id}/shipments",
        json={"carrier": "sf", "tracking_number": NUMBER},
        headers=users.auth(one.manager),
    )
    assert response.status_code == 409
    assert response.json()["type"].endswith("/tracking-number-taken")
    # Another carrier may use the same digits.
    response = await client.post(
        f"/v1/fulfilments/{other.fulfilment_id}/shipments",
        json={"carrier": "zto", "tracking_number": "123456789012"},
        headers=users.auth(one.manager),
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("carrier", "number", "field"),
    [
        ("sf", "XX12", "tracking_number"),
        ("ems", "EE123456784CN", "tracking_number"),  # S10 check digit is 5
        ("pigeon", "123456789012", "carrier"),
    ],
)
async def test_bad_carrier_or_number_is_a_problem_naming_the_field(
    client, users, world, carrier: str, number: str, field: str
) -> None:
    parcelled = await cod_order(client, users, world)
    response = await client.post(
        f"/v1/fulfilments/{parcelled.fulfilment_id}/shipments",
        json={"carrier": carrier, "tracking_number": number},
        headers=users.auth(parcelled.manager),
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


async def test_only_the_cooperatives_manager_ships_its_fulfilment(client, users, world) -> None:
    parcelled = await cod_order(client, users, world)
    stranger = await users.make(Role.manager)
    for actor, expected in ((stranger, 403), (parcelled.buyer, 403)):
        response = await client.post(
            f"/v1/fulfilments/{parcelled.fulfilment_id}/shipments",
            json={"carrier": "sf", "tracking_number": NUMBER},
            headers=users.auth(actor),
        )
        assert response.status_code == expected


# --- provider pushes ----------------------------------------------------------------------


async def test_a_signed_push_builds_the_timeline_in_event_time_order(client, users, world) -> None:
    parcelled = await cod_order(client, users, world)
    shipment = await ship(client, users, parcelled)
    response = await push(
        client,
        [
            ("OutForDelivery_001", at(2), "青溪县"),
            ("InfoReceived_001", at(30), "深圳"),
            ("InTransit_007", at(20), "长沙"),
        ],
    )
    assert response.status_code == 200, response.text
    shown = (
        await client.get(f"/v1/shipments/{shipment['id']}", headers=users.auth(parcelled.buyer))
    ).json()
    assert [e["status"] for e in shown["events"]] == [
        "info_received",
        "in_transit",
        "out_for_delivery",
    ]
    assert shown["status"] == "out_for_delivery"
    assert shown["events"][1]["raw_status"] == "InTransit_007"


async def test_the_same_push_ten_times_is_stored_once(client, users, world, session) -> None:
    parcelled = await cod_order(client, users, world)
    await ship(client, users, parcelled)
    body, headers = aftership_push(
        AFTERSHIP_SECRET,
        carrier="sf",
        number=NUMBER,
        checkpoints=[("InTransit_007", at(5), "长沙"), ("OutForDelivery_001", at(1), None)],
    )
    for _ in range(10):
        response = await client.post(
            "/v1/webhooks/tracking/aftership", content=body, headers=headers
        )
        assert response.status_code == 200
    assert await event_count(session) == 2
    assert await session.scalar(select(func.count()).select_from(TrackingPush)) == 1


async def test_a_redelivery_with_a_new_event_id_adds_only_new_scans(
    client, users, world, session
) -> None:
    parcelled = await cod_order(client, users, world)
    await ship(client, users, parcelled)
    first = [("InTransit_007", at(5), "长沙")]
    await push(client, first)
    await push(client, [*first, ("OutForDelivery_001", at(1), None)])
    assert await event_count(session) == 2


async def test_a_late_stale_scan_does_not_move_a_delivered_parcel_back(
    client, users, world
) -> None:
    parcelled = await cod_order(client, users, world)
    shipment = await ship(client, users, parcelled)
    await push(client, [("Delivered_001", at(1), "青溪县")])
    await push(client, [("InTransit_007", at(10), "长沙"), ("OutForDelivery_001", at(3), None)])
    shown = (
        await client.get(f"/v1/shipments/{shipment['id']}", headers=users.auth(parcelled.manager))
    ).json()
    assert shown["status"] == "delivered"
    assert len(shown["events"]) == 3
    assert shown["events"][-1]["status"] == "delivered"


async def test_a_return_after_delivery_is_reported(client, users, world) -> None:
    parcelled = await cod_order(client, users, world)
    shipment = await ship(client, users, parcelled)
    await push(client, [("Delivered_001", at(5), None)])
    await push(client, [("Exception_011", at(1), "深圳")])
    shown = (
        await client.get(f"/v1/shipments/{shipment['id']}", headers=users.auth(parcelled.manager))
    ).json()
    assert shown["status"] == "returned"


async def test_a_bad_signature_is_refused_and_nothing_is_stored(
    client, users, world, session
) -> None:
    parcelled = await cod_order(client, users, world)
    await ship(client, users, parcelled)
    body, headers = aftership_push(
        "not-the-secret", carrier="sf", number=NUMBER, checkpoints=[("Delivered_001", at(1), None)]
    )
    response = await client.post("/v1/webhooks/tracking/aftership", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["type"].endswith("/invalid-signature")
    no_header = await client.post(
        "/v1/webhooks/tracking/aftership",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert no_header.status_code == 400
    assert await event_count(session) == 0
    assert await session.scalar(select(func.count()).select_from(TrackingPush)) == 0


async def test_an_unknown_provider_is_404_and_an_unconfigured_one_503(client, app) -> None:
    assert (await client.post("/v1/webhooks/tracking/pigeon", content=b"{}")).status_code == 404
    from app.main import tracking_providers
    from services.tracking.polling import use_providers

    app.state.tracking = tracking_providers(
        app.state.settings.model_copy(update={"kuaidi100_salt": None})
    )
    try:
        response = await client.post("/v1/webhooks/tracking/kuaidi100", content=b"param=x&sign=y")
        assert response.status_code == 503
    finally:
        use_providers(tracking_providers(app.state.settings))


async def test_a_push_for_an_unknown_parcel_is_acknowledged_and_kept(client, session) -> None:
    response = await push(client, [("InTransit_007", at(1), None)], number="SF9999999999999")
    assert response.status_code == 200
    outcome = await session.scalar(select(TrackingPush.outcome))
    assert outcome == "unknown-parcel"


async def test_kuaidi100_pushes_carry_the_whole_history_and_are_upserted(
    client, users, world, session
) -> None:
    parcelled = await cod_order(client, users, world)
    shipment = await ship(
        client, users, parcelled, "YT1234567890123", carrier="yto", provider="kuaidi100"
    )
    now = datetime.now(UTC)
    older = [
        ("0", beijing_time(now - timedelta(hours=20)), "长沙市"),
        ("1", beijing_time(now - timedelta(hours=30)), "上海市"),
    ]
    body, headers = kuaidi100_push(
        KUAIDI100_SALT, carrier="yto", number="YT1234567890123", items=older
    )
    response = await client.post("/v1/webhooks/tracking/kuaidi100", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["result"] is True and response.json()["returnCode"] == "200"
    body, headers = kuaidi100_push(
        KUAIDI100_SALT,
        carrier="yto",
        number="YT1234567890123",
        items=[("5", beijing_time(now - timedelta(hours=1)), "青溪县"), *older],
    )
    await client.post("/v1/webhooks/tracking/kuaidi100", content=body, headers=headers)
    shown = (
        await client.get(f"/v1/shipments/{shipment['id']}", headers=users.auth(parcelled.manager))
    ).json()
    assert [e["status"] for e in shown["events"]] == [
        "info_received",
        "in_transit",
        "out_for_delivery",
    ]
    assert shown["status"] == "out_for_delivery"
    # Beijing wall-clock time became UTC.
    first = datetime.fromisoformat(shown["events"][0]["occurred_at"])
    assert abs(first - (now - timedelta(hours=30))) < timedelta(seconds=1)


async def test_a_kuaidi100_push_with_a_bad_sign_is_refused(client, users, world, session) -> None:
    parcelled = await cod_order(client, users, world)
    await ship(client, users, parcelled, "YT1234567890123", carrier="yto", provider="kuaidi100")
    body, headers = kuaidi100_push(
        "wrong-salt",
        carrier="yto",
        number="YT1234567890123",
        items=[("3", beijing_time(datetime.now(UTC)), None)],
    )
    response = await client.post("/v1/webhooks/tracking/kuaidi100", content=body, headers=headers)
    assert response.status_code == 400
    assert await event_count(session) == 0


# --- delivery ---------------------------------------------------------------------------------


async def test_delivery_of_the_only_parcel_delivers_fulfilment_and_order_with_an_outbox_record(
    client, users, world, session
) -> None:
    parcelled = await cod_order(client, users, world)
    shipment = await ship(client, users, parcelled)
    await push(client, [("Delivered_001", at(1), "青溪县")])
    order = (
        await client.get(f"/v1/orders/{parcelled.order['id']}", headers=users.auth(parcelled.buyer))
    ).json()
    assert order["status"] == "delivered"
    assert order["fulfilments"][0]["status"] == "delivered"
    # Cash on delivery earns nothing before the cash is collected: no recognition job yet.
    assert await recognition_jobs(session, parcelled.fulfilment_id) == 0
    collected = await manual(
        client,
        users,
        parcelled.manager,
        shipment["id"],
        kind="cash_collected",
        amount_fen=order["total_fen"],
    )
    assert collected.status_code == 201, collected.text
    assert await recognition_jobs(session, parcelled.fulfilment_id) == 1
    # Told again, nothing more happens.
    await push(client, [("Delivered_001", at(1), "青溪县")])
    assert await recognition_jobs(session, parcelled.fulfilment_id) == 1


async def test_the_delivery_of_a_paid_order_queues_its_recognition(
    client, users, world, session
) -> None:
    parcelled = await cod_order(client, users, world)
    await ship(client, users, parcelled)
    # The courier took the cash before the carrier's delivery scan came in.
    await payments.record_cash_collected(
        session,
        uuid.UUID(parcelled.order["id"]),
        amount=parcelled.order["total_fen"],
        now=datetime.now(UTC),
    )
    await session.flush()
    assert await recognition_jobs(session, parcelled.fulfilment_id) == 0  # not delivered yet
    await push(client, [("Delivered_001", at(1), "青溪县")])
    assert await recognition_jobs(session, parcelled.fulfilment_id) == 1
    await push(client, [("Delivered_001", at(1), "青溪县")])
    assert await recognition_jobs(session, parcelled.fulfilment_id) == 1


async def test_a_fulfilment_waits_for_its_last_parcel(client, users, world, session) -> None:
    parcelled = await cod_order(client, users, world)
    await ship(client, users, parcelled, "SF1234567890123")
    await ship(client, users, parcelled, "SF1234567890124")
    await push(client, [("Delivered_001", at(2), None)], number="SF1234567890123")
    fulfilment = await session.get(
        Fulfilment, uuid.UUID(parcelled.fulfilment_id), populate_existing=True
    )
    assert fulfilment.status.value == "shipped"
    assert fulfilment.delivered_at is None
    await push(client, [("Delivered_001", at(1), None)], number="SF1234567890124")
    await session.refresh(fulfilment)
    assert fulfilment.status.value == "delivered"
    # Delivered when the last parcel was (an hour ago), not when the first was.
    assert fulfilment.delivered_at is not None
    assert abs(fulfilment.delivered_at - datetime.fromisoformat(at(1))) < timedelta(minutes=5)


async def test_an_order_is_delivered_only_when_every_cooperative_delivered(
    client, users, world
) -> None:
    second = await world.cooperative()
    tea = await world.product(second, price_fen=9900, stock=5)
    parcelled = await cod_order(client, users, world, extra_lines=[(tea, 1)])
    await ship(client, users, parcelled)
    await push(client, [("Delivered_001", at(1), None)])
    order = (
        await client.get(f"/v1/orders/{parcelled.order['id']}", headers=users.auth(parcelled.buyer))
    ).json()
    assert order["status"] == "shipped"
    statuses = {f["cooperative_id"]: f["status"] for f in order["fulfilments"]}
    assert statuses == {str(parcelled.cooperative.id): "delivered", str(second.id): "ready"}


# --- pickup at a village site and manual events ---------------------------------------------------


async def pickup_order(client, users, world) -> tuple[Any, Any, Any]:
    site = await world.site()
    operator = await users.make(Role.site_operator, site_id=site.id)
    parcelled = await cod_order(
        client, users, world, delivery={"type": "pickup", "site_id": str(site.id)}
    )
    shipment = await ship(client, users, parcelled)
    return parcelled, shipment, operator


async def manual(client, users, actor, shipment_id: str, **body: Any) -> Any:
    headers = users.auth(actor)
    if "key" in body:
        headers["Idempotency-Key"] = body.pop("key")
    return await client.post(f"/v1/shipments/{shipment_id}/events", json=body, headers=headers)


async def test_a_pickup_parcel_is_delivered_when_the_buyer_collects_it(
    client, users, world, session
) -> None:
    parcelled, shipment, operator = await pickup_order(client, users, world)
    assert shipment["pickup_site_id"] is not None
    # The carrier "delivers" to the site: for the buyer, it waits there.
    await push(client, [("Delivered_001", at(3), "上坪村服务站")])
    shown = (
        await client.get(f"/v1/shipments/{shipment['id']}", headers=users.auth(operator))
    ).json()
    assert shown["status"] == "available_for_pickup"
    fulfilment = await session.get(Fulfilment, uuid.UUID(parcelled.fulfilment_id))
    assert fulfilment is not None and fulfilment.status.value == "shipped"
    response = await manual(client, users, operator, shipment["id"], kind="picked_up")
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "delivered"
    await session.refresh(fulfilment)
    assert fulfilment.status.value == "delivered"


async def test_the_site_operator_sees_the_parcels_of_the_site(client, users, world) -> None:
    _parcelled, shipment, operator = await pickup_order(client, users, world)
    listed = await client.get(
        f"/v1/service-sites/{operator.site_id}/shipments", headers=users.auth(operator)
    )
    assert [s["id"] for s in listed.json()["items"]] == [shipment["id"]]
    other = await users.make(Role.site_operator)
    assert (
        await client.get(
            f"/v1/service-sites/{operator.site_id}/shipments", headers=users.auth(other)
        )
    ).status_code == 403
    assert (
        await client.get(f"/v1/shipments/{shipment['id']}", headers=users.auth(other))
    ).status_code == 404


async def test_each_role_records_only_its_own_events(client, users, world) -> None:
    parcelled, shipment, operator = await pickup_order(client, users, world)
    assert (
        await manual(client, users, parcelled.manager, shipment["id"], kind="picked_up")
    ).status_code == 403
    assert (
        await manual(client, users, operator, shipment["id"], kind="handed_over")
    ).status_code == 403
    home = await cod_order(client, users, world)
    home_shipment = await ship(client, users, home, "SF1234567890199")
    response = await manual(client, users, home.manager, home_shipment["id"], kind="handed_over")
    assert response.status_code == 201
    assert response.json()["status"] == "in_transit"
    # A door-to-door parcel has no site to be received at.
    admin = world.admin
    response = await manual(client, users, admin, home_shipment["id"], kind="received_at_site")
    assert response.status_code == 409


async def test_cash_collected_records_the_payment_once(client, users, world, session) -> None:
    parcelled, shipment, operator = await pickup_order(client, users, world)
    total = parcelled.order["total_fen"]
    wrong = await manual(
        client, users, operator, shipment["id"], kind="cash_collected", amount_fen=total - 1
    )
    assert wrong.status_code == 422
    assert await event_count(session) == 0  # nothing recorded for a rejected report
    response = await manual(
        client,
        users,
        operator,
        shipment["id"],
        kind="cash_collected",
        amount_fen=total,
        key="cash-1",
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "delivered"
    again = await manual(
        client,
        users,
        operator,
        shipment["id"],
        kind="cash_collected",
        amount_fen=total,
        key="cash-1",
    )
    assert again.status_code == 200
    order = (
        await client.get(f"/v1/orders/{parcelled.order['id']}", headers=users.auth(parcelled.buyer))
    ).json()
    assert order["payment_status"] == "paid" and order["paid_fen"] == total
    assert order["status"] == "delivered"
    assert await recognition_jobs(session, parcelled.fulfilment_id) == 1
    product = await session.get(Product, parcelled.product.id, populate_existing=True)
    assert (product.stock, product.reserved) == (18, 0)


async def test_a_refused_cash_parcel_cancels_the_order_and_returns_the_stock(
    client, users, world, session
) -> None:
    parcelled = await cod_order(client, users, world)
    shipment = await ship(client, users, parcelled)
    response = await manual(
        client, users, parcelled.manager, shipment["id"], kind="refused", note="买家拒收"
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "returned"
    order = (
        await client.get(f"/v1/orders/{parcelled.order['id']}", headers=users.auth(parcelled.buyer))
    ).json()
    assert order["status"] == "cancelled"
    assert order["fulfilments"][0]["status"] == "cancelled"
    product = await session.get(Product, parcelled.product.id, populate_existing=True)
    assert (product.stock, product.reserved) == (20, 0)
    # Cash cannot be collected for it afterwards.
    late = await manual(
        client,
        users,
        parcelled.manager,
        shipment["id"],
        kind="cash_collected",
        amount_fen=parcelled.order["total_fen"],
    )
    assert late.status_code == 409


async def test_an_event_in_the_future_is_refused(client, users, world) -> None:
    parcelled = await cod_order(client, users, world)
    shipment = await ship(client, users, parcelled)
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    response = await manual(
        client, users, parcelled.manager, shipment["id"], kind="handed_over", occurred_at=later
    )
    assert response.status_code == 422
    assert response.json()["field"] == "occurred_at"


# --- reading --------------------------------------------------------------------------------------


async def test_buyers_track_their_own_orders_only(client, users, world) -> None:
    parcelled = await cod_order(client, users, world)
    shipment = await ship(client, users, parcelled)
    await push(client, [("InTransit_007", at(2), "长沙")])
    mine = await client.get(
        f"/v1/orders/{parcelled.order['id']}/tracking", headers=users.auth(parcelled.buyer)
    )
    assert mine.status_code == 200
    body = mine.json()
    assert body["order_status"] == "shipped"
    assert [s["id"] for s in body["shipments"]] == [shipment["id"]]
    assert body["shipments"][0]["events"][0]["location"] == "长沙"
    stranger = await users.make(Role.buyer)
    assert (
        await client.get(
            f"/v1/orders/{parcelled.order['id']}/tracking", headers=users.auth(stranger)
        )
    ).status_code == 404
    assert (
        await client.get(f"/v1/shipments/{shipment['id']}", headers=users.auth(stranger))
    ).status_code == 404


async def test_managers_see_parcels_in_trouble_or_silent(client, users, world, session) -> None:
    coop = await world.cooperative()
    trouble = await cod_order(client, users, world, cooperative=coop)
    silent = await cod_order(client, users, world, cooperative=coop)
    fine = await cod_order(client, users, world, cooperative=coop)
    troubled = await ship(client, users, trouble, "SF1234567890111")
    quiet = await ship(client, users, silent, "SF1234567890112")
    await ship(client, users, fine, "SF1234567890113")
    await push(client, [("Exception_001", at(1), "长沙")], number="SF1234567890111")
    await push(client, [("InTransit_007", at(24 * 5), "长沙")], number="SF1234567890112")
    await push(client, [("InTransit_007", at(2), "长沙")], number="SF1234567890113")
    response = await client.get(
        f"/v1/cooperatives/{coop.id}/shipment-alerts", headers=users.auth(trouble.manager)
    )
    assert response.status_code == 200, response.text
    reasons = {item["id"]: item["reason"] for item in response.json()["items"]}
    assert reasons == {troubled["id"]: "exception", quiet["id"]: "no-news"}
    narrower = await client.get(
        f"/v1/cooperatives/{coop.id}/shipment-alerts?stale_days=10",
        headers=users.auth(trouble.manager),
    )
    assert {item["id"] for item in narrower.json()["items"]} == {troubled["id"]}
    outsider = await users.make(Role.manager)
    assert (
        await client.get(
            f"/v1/cooperatives/{coop.id}/shipment-alerts", headers=users.auth(outsider)
        )
    ).status_code == 403


async def test_shipments_keep_the_county_for_distribution(client, users, world, session) -> None:
    parcelled = await cod_order(client, users, world)
    await ship(client, users, parcelled)
    await push(client, [("InTransit_007", at(2), None)])
    shipment = await session.scalar(select(Shipment))
    event = await session.scalar(select(ShipmentEvent))
    assert shipment.county_code == event.county_code == world.county.county
