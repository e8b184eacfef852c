"""The poller against a local fake provider: answers, 429s, failures, timeouts, the rate."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.main import tracking_providers
from app.settings import Settings
from services.jobs.models import Job
from services.tracking import polling, service
from services.tracking.kuaidi100 import phone_tail
from services.tracking.models import EventSource, ProviderPause, Shipment, ShipmentEvent, Source
from services.tracking.vocabulary import Checkpoint, TrackingStatus, TrackingUpdate
from tests.fakes.tracking_server import (
    AFTERSHIP_API_KEY,
    AFTERSHIP_TRACKINGS,
    KUAIDI100_CUSTOMER,
    KUAIDI100_KEY,
    KUAIDI100_QUERY,
    FakeTrackingServer,
    serve_fake_tracking,
)
from tests.tracking_helpers import cod_order, ship, with_providers

S = TrackingStatus
NUMBER = "SF1234567890123"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTrackingServer]:
    with serve_fake_tracking() as server:
        yield server


@pytest.fixture
def settings(settings: Settings, fake: FakeTrackingServer) -> Settings:
    fake.state.reset()
    return with_providers(
        settings,
        aftership_api_key=AFTERSHIP_API_KEY,
        aftership_api_base=fake.aftership_base,
        kuaidi100_customer=KUAIDI100_CUSTOMER,
        kuaidi100_key=KUAIDI100_KEY,
        kuaidi100_api_base=fake.kuaidi100_base,
        tracking_timeout_seconds=0.5,
        tracking_poll_minutes=60,
        tracking_poll_rate=2.0,
    )


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient() as client:
        yield client


async def shipped(client, users, world, number: str = NUMBER, **kw: Any) -> dict[str, Any]:
    parcelled = await cod_order(client, users, world)
    return await ship(client, users, parcelled, number, **kw)


async def poll(session, app, http, shipment: dict[str, Any], now: datetime) -> str:
    return await polling.poll_one(
        session, app.state.tracking, uuid.UUID(shipment["id"]), client=http, now=now
    )


async def row(session, shipment: dict[str, Any]) -> Shipment:
    found = await session.get(Shipment, uuid.UUID(shipment["id"]), populate_existing=True)
    assert found is not None
    return found


def ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


async def test_a_new_parcel_of_a_polling_provider_is_due_at_once(
    client, users, world, session
) -> None:
    shipment = await shipped(client, users, world)
    assert (await row(session, shipment)).next_poll_at is not None


async def test_a_poll_applies_the_answer_and_schedules_the_next(
    client, users, world, session, app, http, fake
) -> None:
    shipment = await shipped(client, users, world)
    fake.state.set_parcel(
        "sf", NUMBER, (S.info_received, ago(30), "深圳"), (S.in_transit, ago(5), "长沙")
    )
    now = datetime.now(UTC)
    assert await poll(session, app, http, shipment, now) == "polled"
    polled = await row(session, shipment)
    assert polled.status is S.in_transit
    assert polled.next_poll_at == now + timedelta(minutes=60)
    assert fake.state.calls[AFTERSHIP_TRACKINGS] == 1


async def test_kuaidi100_parcels_are_polled_too(
    client, users, world, session, app, http, fake
) -> None:
    shipment = await shipped(
        client, users, world, "YT1234567890123", carrier="yto", provider="kuaidi100"
    )
    fake.state.set_parcel("yto", "YT1234567890123", (S.out_for_delivery, ago(1), "青溪县"))
    assert await poll(session, app, http, shipment, datetime.now(UTC)) == "polled"
    assert (await row(session, shipment)).status is S.out_for_delivery
    assert fake.state.calls[KUAIDI100_QUERY] == 1


def kuaidi100_query(fake: FakeTrackingServer) -> dict[str, Any]:
    asked = [r for r in fake.state.requests if r.endpoint == KUAIDI100_QUERY]
    query: dict[str, Any] = json.loads(asked[-1].params["param"])
    return query


async def test_kuaidi100_is_asked_about_an_sf_parcel_with_the_recipients_phone_tail(
    client, users, world, session, app, http, fake
) -> None:
    shipment = await shipped(client, users, world, NUMBER, provider="kuaidi100")
    fake.state.set_parcel("sf", NUMBER, (S.in_transit, ago(1), "长沙"))
    assert await poll(session, app, http, shipment, datetime.now(UTC)) == "polled"
    # The address phone of tests.orders_helpers is 13800001111: its last four digits only.
    assert kuaidi100_query(fake)["phone"] == "1111"
    assert (await row(session, shipment)).status is S.in_transit


async def test_no_phone_is_sent_for_a_carrier_that_does_not_ask(
    client, users, world, session, app, http, fake
) -> None:
    shipment = await shipped(
        client, users, world, "YT1234567890123", carrier="yto", provider="kuaidi100"
    )
    fake.state.set_parcel("yto", "YT1234567890123", (S.in_transit, ago(1), "长沙"))
    assert await poll(session, app, http, shipment, datetime.now(UTC)) == "polled"
    assert "phone" not in kuaidi100_query(fake)


def test_the_phone_tail_is_its_last_four_digits() -> None:
    assert phone_tail("+86 138-0000-1111") == "1111"
    assert phone_tail("１３８００００２２２２") == "2222"  # full width
    assert phone_tail("12") is None and phone_tail(None) is None


async def test_a_delivered_parcel_is_not_polled_again(
    client, users, world, session, app, http, fake
) -> None:
    shipment = await shipped(client, users, world)
    fake.state.set_parcel("sf", NUMBER, (S.delivered, ago(1), "青溪县"))
    await poll(session, app, http, shipment, datetime.now(UTC))
    done = await row(session, shipment)
    assert done.status is S.delivered and done.next_poll_at is None
    assert await polling.dispatch(session, app.state.tracking, now=datetime.now(UTC)) == 0
    assert await poll(session, app, http, shipment, datetime.now(UTC)) == "finished"
    assert fake.state.calls[AFTERSHIP_TRACKINGS] == 1


async def test_a_429_pauses_the_provider_for_its_retry_after(
    client, users, world, session, app, http, fake
) -> None:
    first = await shipped(client, users, world)
    second = await shipped(client, users, world, "SF1234567890124")
    fake.state.set_parcel("sf", NUMBER, (S.in_transit, ago(1), None))
    fake.state.rate_limit_next(1, retry_after=120)
    now = datetime.now(UTC)
    assert await poll(session, app, http, first, now) == "rate-limited"
    pause = await session.get(ProviderPause, Source.aftership, populate_existing=True)
    assert pause is not None and pause.paused_until == now + timedelta(seconds=120)
    assert (await row(session, first)).next_poll_at == now + timedelta(seconds=120)
    # While paused nobody asks the provider: neither a queued poll nor the dispatcher.
    assert await poll(session, app, http, second, now + timedelta(seconds=10)) == "provider-paused"
    assert await polling.dispatch(session, app.state.tracking, now=now + timedelta(seconds=10)) == 0
    assert fake.state.calls[AFTERSHIP_TRACKINGS] == 1
    # Afterwards it is asked again.
    assert await poll(session, app, http, first, now + timedelta(seconds=121)) == "polled"


@pytest.mark.parametrize("fault", ["fail", "timeout"])
async def test_failures_and_timeouts_back_off_exponentially(
    client, users, world, session, app, http, fake, fault: str
) -> None:
    shipment = await shipped(client, users, world)
    fake.state.set_parcel("sf", NUMBER, (S.in_transit, ago(1), None))
    delays = []
    now = datetime.now(UTC)
    for _ in range(3):
        if fault == "fail":
            fake.state.fail_next(1, status=500)
        else:
            fake.state.timeout_next(1, seconds=3)
        assert await poll(session, app, http, shipment, now) == "provider-unavailable"
        after = await row(session, shipment)
        assert after.next_poll_at is not None
        delays.append((after.next_poll_at - now).total_seconds())
    assert (await row(session, shipment)).poll_failures == 3
    # 10 s doubling, each jittered to between half and all of it.
    for attempt, delay in enumerate(delays, start=1):
        full = 10 * 2 ** (attempt - 1)
        assert full / 2 <= delay <= full
    assert await poll(session, app, http, shipment, now) == "polled"
    assert (await row(session, shipment)).poll_failures == 0


async def test_an_unknown_parcel_is_asked_again_later(
    client, users, world, session, app, http, fake
) -> None:
    shipment = await shipped(client, users, world)
    now = datetime.now(UTC)
    assert await poll(session, app, http, shipment, now) == "not-found"
    assert (await row(session, shipment)).next_poll_at == now + timedelta(minutes=60)


async def test_the_dispatcher_spaces_polls_by_the_providers_rate(
    client, users, world, session, app
) -> None:
    shipments = [await shipped(client, users, world, f"SF12345678901{i:02d}") for i in range(5)]
    now = datetime.now(UTC) + timedelta(seconds=1)
    assert await polling.dispatch(session, app.state.tracking, now=now) == 5
    jobs = (
        await session.scalars(select(Job).where(Job.kind == polling.POLL_JOB).order_by(Job.run_at))
    ).all()
    assert {j.payload["shipment_id"] for j in jobs} == {s["id"] for s in shipments}
    gaps = [(b.run_at - a.run_at).total_seconds() for a, b in itertools.pairwise(jobs)]
    assert gaps == [0.5] * 4  # two calls a second
    # Leased: the next tick queues nothing more for them, and the next slot moved on.
    assert await polling.dispatch(session, app.state.tracking, now=now) == 0
    pause = await session.get(ProviderPause, Source.aftership, populate_existing=True)
    assert pause is not None and pause.next_slot_at == now + timedelta(seconds=2.5)


async def test_manual_parcels_are_not_polled(client, users, world, session, app) -> None:
    shipment = await shipped(client, users, world, provider="manual")
    assert (await row(session, shipment)).next_poll_at is None


async def test_a_poll_and_a_push_of_the_same_scan_make_one_event(
    client, users, world, session, app, http, fake
) -> None:
    from tests.fakes.tracking_pushes import aftership_push
    from tests.tracking_helpers import AFTERSHIP_SECRET

    shipment = await shipped(client, users, world)
    when = ago(2).replace(microsecond=0)
    fake.state.set_parcel("sf", NUMBER, (S.in_transit, when, "长沙"))
    body, headers = aftership_push(
        AFTERSHIP_SECRET,
        carrier="sf",
        number=NUMBER,
        checkpoints=[("InTransit_007", when.isoformat(), "长沙")],
    )
    assert (
        await client.post("/v1/webhooks/tracking/aftership", content=body, headers=headers)
    ).status_code == 200
    await poll(session, app, http, shipment, datetime.now(UTC))
    events = (await session.scalars(select(ShipmentEvent))).all()
    assert len(events) == 1


def test_providers_follow_their_keys(settings: Settings) -> None:
    configured = tracking_providers(settings)
    assert [p.name for p in configured.pollable()] == ["aftership", "kuaidi100"]
    bare = tracking_providers(
        settings.model_copy(update={"aftership_api_key": None, "kuaidi100_key": None})
    )
    assert bare.pollable() == []
    assert bare.first_poll(Source.aftership, datetime.now(UTC)) is None


async def test_old_webhook_deliveries_are_forgotten(session) -> None:
    from services.tracking.models import TrackingPush

    old = datetime.now(UTC) - polling.KEEP_PUSHES - timedelta(hours=1)
    session.add_all(
        [
            TrackingPush(
                provider=Source.aftership, delivery_id="old", outcome="applied", received_at=old
            ),
            TrackingPush(provider=Source.aftership, delivery_id="new", outcome="applied"),
        ]
    )
    await session.flush()
    await polling.purge_pushes(session)
    kept = (await session.scalars(select(TrackingPush.delivery_id))).all()
    assert kept == ["new"]


# --- silent parcels -------------------------------------------------------------------------

MONTH = timedelta(days=30)


async def timeline(session, shipment: dict[str, Any]) -> list[ShipmentEvent]:
    return list(
        (
            await session.scalars(
                select(ShipmentEvent)
                .where(ShipmentEvent.shipment_id == uuid.UUID(shipment["id"]))
                .order_by(ShipmentEvent.occurred_at, ShipmentEvent.id)
            )
        ).all()
    )


async def test_a_parcel_without_news_for_a_month_is_expired_and_no_longer_polled(
    client, users, world, session, app, http, fake
) -> None:
    parcelled = await cod_order(client, users, world)
    shipment = await ship(client, users, parcelled, NUMBER)
    fake.state.set_parcel("sf", NUMBER, (S.in_transit, ago(24 * 31), "长沙"))
    await poll(session, app, http, shipment, datetime.now(UTC))
    now = datetime.now(UTC)

    assert await service.expire_silent(session, now=now, silent_for=MONTH) == 1

    expired = await row(session, shipment)
    assert expired.status is S.expired and expired.next_poll_at is None
    last = (await timeline(session, shipment))[-1]
    assert (last.source, last.status, last.occurred_at) == (EventSource.system, S.expired, now)
    assert await service.expire_silent(session, now=now, silent_for=MONTH) == 0
    assert await poll(session, app, http, shipment, now) == "finished"
    alerts = await client.get(
        f"/v1/cooperatives/{parcelled.cooperative.id}/shipment-alerts",
        headers=users.auth(parcelled.manager),
    )
    assert [(a["id"], a["reason"]) for a in alerts.json()["items"]] == [(shipment["id"], "expired")]


async def test_a_parcel_with_news_within_the_month_is_kept(
    client, users, world, session, app, http, fake
) -> None:
    shipment = await shipped(client, users, world)
    fake.state.set_parcel("sf", NUMBER, (S.in_transit, ago(24 * 29), "长沙"))
    await poll(session, app, http, shipment, datetime.now(UTC))
    assert await service.expire_silent(session, now=datetime.now(UTC), silent_for=MONTH) == 0
    assert (await row(session, shipment)).status is S.in_transit


async def test_a_parcel_never_heard_of_expires_a_month_after_it_was_registered(
    client, users, world, session
) -> None:
    shipment = await shipped(client, users, world)
    soon = datetime.now(UTC) + timedelta(days=29)
    assert await service.expire_silent(session, now=soon, silent_for=MONTH) == 0
    later = datetime.now(UTC) + timedelta(days=31)
    assert await service.expire_silent(session, now=later, silent_for=MONTH) == 1
    assert (await row(session, shipment)).status is S.expired


async def test_a_delivery_reported_after_the_expiry_still_delivers_the_parcel(
    client, users, world, session
) -> None:
    shipment = await shipped(client, users, world)
    later = datetime.now(UTC) + timedelta(days=31)
    await service.expire_silent(session, now=later, silent_for=MONTH)
    delivered_at = later + timedelta(hours=2)
    outcome = await service.receive_update(
        session,
        TrackingUpdate(
            provider="aftership",
            carrier="sf",
            tracking_number=NUMBER,
            checkpoints=(Checkpoint(S.delivered, "Delivered_001", delivered_at, "青溪县"),),
        ),
        now=delivered_at,
    )
    assert outcome.status is S.delivered
    assert [e.status for e in await timeline(session, shipment)] == [S.expired, S.delivered]


def test_the_expiry_follows_its_setting(settings: Settings) -> None:
    tuned = settings.model_copy(update={"tracking_expire_days": 45})
    assert tracking_providers(tuned).policy.expire_after == timedelta(days=45)
