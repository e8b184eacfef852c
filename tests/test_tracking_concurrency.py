"""Tracking races with real concurrent connections, on a database of their own (committed data)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.main import create_app
from app.settings import Settings
from services.db import create_engine
from services.jobs.models import Job
from services.orders.models import Fulfilment, Order
from services.orders.service import RECOGNITION_JOB
from services.payments import service as payments
from services.schema import upgrade
from services.tracking import polling
from services.tracking.models import Shipment, ShipmentEvent, TrackingPush
from services.tracking.vocabulary import TrackingStatus
from services.users.models import Role, User
from tests.conftest import _PASSWORD_HASH, JWT_SECRET, create_database, drop_database
from tests.factories import PII_KEY, Builder, build_regions
from tests.fakes.tracking_pushes import AFTERSHIP_SUBTAGS, aftership_push
from tests.fakes.tracking_server import AFTERSHIP_API_KEY, serve_fake_tracking
from tests.orders_helpers import cart
from tests.test_orders_concurrency import auth
from tests.tracking_helpers import AFTERSHIP_SECRET

S = TrackingStatus


@pytest.fixture(scope="module")
async def live(server_url: str, tmp_path_factory: Any) -> AsyncIterator[dict[str, Any]]:
    name = f"marketplace_track_{uuid.uuid4().hex[:10]}"
    url = await create_database(server_url, name)
    engine = create_engine(url)
    await upgrade(engine)
    with serve_fake_tracking() as fake:
        settings = Settings(
            database_url=url,
            jwt_secret=JWT_SECRET,
            pii_key=PII_KEY.decode(),
            data_dir=tmp_path_factory.mktemp("track"),
            log_level="WARNING",
            run_worker_in_process=False,
            db_pool_size=20,
            aftership_webhook_secret=AFTERSHIP_SECRET,
            aftership_api_key=AFTERSHIP_API_KEY,
            aftership_api_base=fake.aftership_base,
        )
        app = create_app(settings)
        factory = app.state.sessionmaker
        async with factory() as session, session.begin():
            admin = User(
                email="track-admin@example.com", password_hash=_PASSWORD_HASH, role=Role.admin
            )
            session.add(admin)
            await session.flush()
            world = Builder(session, admin, await build_regions(session))
            coop = await world.cooperative()
            product = await world.product(coop, price_fen=1000, stock=10_000)
            buyer = User(
                email="track-buyer@example.com", password_hash=_PASSWORD_HASH, role=Role.buyer
            )
            manager = User(
                email="track-manager@example.com",
                password_hash=_PASSWORD_HASH,
                role=Role.manager,
                cooperative_id=coop.id,
            )
            session.add_all([buyer, manager])
            await session.flush()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://track") as client,
            httpx.AsyncClient() as http,
        ):
            yield {
                "app": app,
                "client": client,
                "http": http,
                "factory": factory,
                "fake": fake,
                "product": product,
                "buyer": buyer,
                "manager": manager,
            }
        await app.state.engine.dispose()
    await engine.dispose()
    await drop_database(server_url, name)


_serial = iter(range(10_000_000))


async def order_with_parcels(live: dict[str, Any], parcels: int) -> tuple[str, str, list[str]]:
    """A cash-on-delivery order and its fulfilment, with `parcels` registered parcels."""
    client = live["client"]
    response = await client.post(
        "/v1/checkout",
        json=cart((live["product"], 1)),
        headers={**auth(live["buyer"]), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    order = response.json()
    fulfilment_id = order["fulfilments"][0]["id"]
    numbers = []
    for _ in range(parcels):
        number = f"SF{7_000_000_000_000 + next(_serial)}"
        shipped = await client.post(
            f"/v1/fulfilments/{fulfilment_id}/shipments",
            json={"carrier": "sf", "tracking_number": number, "provider": "aftership"},
            headers=auth(live["manager"]),
        )
        assert shipped.status_code == 201, shipped.text
        numbers.append(number)
    return order["id"], fulfilment_id, numbers


async def push(live: dict[str, Any], number: str, scans: list[tuple[S, datetime, str]]) -> int:
    body, headers = aftership_push(
        AFTERSHIP_SECRET,
        carrier="sf",
        number=number,
        checkpoints=[(AFTERSHIP_SUBTAGS[s], at.isoformat(), where) for s, at, where in scans],
    )
    response = await live["client"].post(
        "/v1/webhooks/tracking/aftership", content=body, headers=headers
    )
    return int(response.status_code)


async def poll(live: dict[str, Any], shipment_id: uuid.UUID) -> str:
    async with live["factory"]() as session, session.begin():
        return await polling.poll_one(
            session,
            live["app"].state.tracking,
            shipment_id,
            client=live["http"],
            now=datetime.now(UTC),
        )


async def shipment_of(live: dict[str, Any], number: str) -> Shipment:
    async with live["factory"]() as session:
        found = await session.scalar(select(Shipment).where(Shipment.tracking_number == number))
        assert found is not None
        return found


async def test_a_push_and_a_poll_reporting_the_same_scans_at_once_store_each_once(live) -> None:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=10)
    scans = [
        (S.info_received, base, "深圳"),
        (S.in_transit, base + timedelta(hours=4), "长沙"),
        (S.out_for_delivery, base + timedelta(hours=9), "青溪县"),
    ]
    parcels = []
    for _ in range(10):
        _, _, (number,) = await order_with_parcels(live, 1)
        live["fake"].state.set_parcel("sf", number, *scans)
        parcels.append(await shipment_of(live, number))
    results = await asyncio.gather(
        *(push(live, s.tracking_number, scans) for s in parcels),
        *(poll(live, s.id) for s in parcels),
    )
    assert results[:10] == [200] * 10
    assert results[10:] == ["polled"] * 10
    async with live["factory"]() as session:
        for shipment in parcels:
            events = await session.scalar(
                select(func.count())
                .select_from(ShipmentEvent)
                .where(ShipmentEvent.shipment_id == shipment.id)
            )
            assert events == 3
            now = await session.get(Shipment, shipment.id)
            assert now is not None and now.status is S.out_for_delivery


async def test_the_last_two_parcels_arriving_at_once_deliver_the_fulfilment_once(live) -> None:
    made = [await order_with_parcels(live, 2) for _ in range(8)]
    # The cash was taken at the door before the scans came in: each delivery is due for
    # recognition, and its outbox record must be written once.
    async with live["factory"]() as session, session.begin():
        for order_id, _, _ in made:
            order = await session.get(Order, uuid.UUID(order_id))
            assert order is not None
            await payments.record_cash_collected(
                session, order.id, amount=order.total_fen, now=datetime.now(UTC)
            )
    delivered_at = datetime.now(UTC) - timedelta(minutes=5)
    statuses = await asyncio.gather(
        *(
            push(live, number, [(S.delivered, delivered_at, "青溪县")])
            for _, _, numbers in made
            for number in numbers
        )
    )
    assert statuses == [200] * 16
    async with live["factory"]() as session:
        for order_id, fulfilment_id, _ in made:
            fulfilment = await session.get(Fulfilment, uuid.UUID(fulfilment_id))
            order = await session.get(Order, uuid.UUID(order_id))
            assert fulfilment is not None and fulfilment.status.value == "delivered"
            assert order is not None and order.status.value == "delivered"
            jobs = await session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.kind == RECOGNITION_JOB, Job.dedupe_key == fulfilment_id)
            )
            assert jobs == 1


async def test_ten_concurrent_redeliveries_of_one_push_have_one_effect(live) -> None:
    _, _, (number,) = await order_with_parcels(live, 1)
    body, headers = aftership_push(
        AFTERSHIP_SECRET,
        carrier="sf",
        number=number,
        checkpoints=[("InTransit_007", datetime.now(UTC).isoformat(), "长沙")],
        event_id="redelivered-event",
    )
    answers = await asyncio.gather(
        *(
            live["client"].post("/v1/webhooks/tracking/aftership", content=body, headers=headers)
            for _ in range(10)
        )
    )
    assert [a.status_code for a in answers] == [200] * 10
    shipment = await shipment_of(live, number)
    async with live["factory"]() as session:
        events = await session.scalar(
            select(func.count())
            .select_from(ShipmentEvent)
            .where(ShipmentEvent.shipment_id == shipment.id)
        )
        pushes = await session.scalar(
            select(func.count())
            .select_from(TrackingPush)
            .where(TrackingPush.delivery_id == "redelivered-event")
        )
    assert (events, pushes) == (1, 1)
