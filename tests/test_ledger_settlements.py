"""Payouts per recognised fulfilment, Stripe transfers exactly once, and the settlement report."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from app.main import create_app
from services.audit.models import AuditEvent
from services.jobs.models import Job
from services.jobs.service import Worker, load_handlers
from services.ledger import payouts, settlements
from services.ledger import service as ledger
from services.ledger.models import LedgerEntry, Payout, PayoutState
from services.payments import jobs as payment_jobs
from services.users.models import Role
from tests.fakes.stripe_server import make_event
from tests.ledger_helpers import delivered_cod_order, recognise, supplied_product
from tests.orders_helpers import cart, key, signed

TRANSFERS = "POST /v1/transfers"


@pytest.fixture
async def stripe_app(stripe_settings, sessionmaker):
    application = create_app(stripe_settings)
    application.state.sessionmaker = sessionmaker
    payment_jobs.use_gateway(application.state.stripe)
    yield application
    payment_jobs.use_gateway(None)
    await application.state.stripe.aclose()


@pytest.fixture
async def api(stripe_app):
    transport = httpx.ASGITransport(app=stripe_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def webhook(api, event: dict[str, Any]) -> None:
    payload, headers = signed(event)
    response = await api.post("/v1/webhooks/stripe", content=payload, headers=headers)
    assert response.status_code == 200, response.text


def intent_of(order: dict[str, Any]) -> str:
    return order["client_secret"].split("_secret_")[0]


async def paid_by_stripe(api, users, fake_stripe, lines) -> dict[str, Any]:
    """Checked out with Stripe, paid at Stripe, and the succeeded event received."""
    buyer = await users.make(Role.buyer)
    response = await api.post(
        "/v1/checkout", json=cart(*lines, method="stripe"), headers=users.auth(buyer) | key()
    )
    assert response.status_code == 201, response.text
    order = response.json()
    intent = fake_stripe.state.confirm(intent_of(order))
    await webhook(api, make_event("payment_intent.succeeded", intent))
    return order


async def dispute(api, order: dict[str, Any], event: str = "created", status: str = "") -> None:
    await webhook(
        api,
        make_event(
            f"charge.dispute.{event}",
            {
                "id": f"dp_{order['id'][:8]}",
                "object": "dispute",
                "amount": order["total_fen"],
                "payment_intent": intent_of(order),
                "status": status or "needs_response",
                "reason": "fraudulent",
            },
        ),
    )


async def ship_and_deliver(api, users, order: dict[str, Any]) -> None:
    for fulfilment in order["fulfilments"]:
        manager = await users.make(
            Role.manager, cooperative_id=uuid.UUID(fulfilment["cooperative_id"])
        )
        shipment = await api.post(
            f"/v1/fulfilments/{fulfilment['id']}/shipments",
            json={
                "carrier": "sf",
                "tracking_number": f"SF{uuid.uuid4().int % 10**13:013d}",
                "provider": "manual",
            },
            headers=users.auth(manager),
        )
        assert shipment.status_code == 201, shipment.text
        delivered = await api.post(
            f"/v1/shipments/{shipment.json()['id']}/events",
            json={"kind": "delivered"},
            headers=users.auth(manager),
        )
        assert delivered.status_code == 201, delivered.text


async def payouts_of(session, order: dict[str, Any]) -> list[Payout]:
    return list(
        (
            await session.scalars(
                select(Payout)
                .where(Payout.order_id == uuid.UUID(order["id"]))
                .execution_options(populate_existing=True)
            )
        ).all()
    )


async def transfer_jobs(session, payout: Payout) -> list[Job]:
    return list(
        (
            await session.scalars(
                select(Job)
                .where(Job.kind == payouts.TRANSFER_JOB, Job.dedupe_key == str(payout.id))
                .execution_options(populate_existing=True)
            )
        ).all()
    )


def requests_for(fake_stripe, payout: Payout) -> list[Any]:
    return [
        r
        for r in fake_stripe.state.requests
        if r.endpoint == TRANSFERS and r.idempotency_key == f"transfer:{payout.id}"
    ]


@pytest.fixture
async def stripe_shelf(world) -> dict[str, Any]:
    """A cooperative with a connected account; its product has one supplying household."""
    coop = await world.cooperative()
    coop.stripe_account_id = f"acct_{uuid.uuid4().hex[:16]}"
    household = await world.household()
    product = await supplied_product(world, coop, [(household, 6_000)], price_fen=3_333)
    await world.session.flush()
    return {"coop": coop, "household": household, "product": product}


# --- payouts -------------------------------------------------------------------------------


async def test_a_cash_order_makes_one_payable_payout_of_its_net(client, users, world, session):
    coop = await world.cooperative()
    coop.stripe_account_id = "acct_cash_is_not_transferred"
    a = await world.household()
    product = await supplied_product(world, coop, [(a, 6_000)], price_fen=3_333)
    order = await delivered_cod_order(client, users, [(product, 3)])
    await recognise(session, order)
    await recognise(session, order)  # exactly once, whatever runs twice
    [payout] = await payouts_of(session, order)
    # 9,999 gross - 499 fee: the cash was settled outside Stripe, the net is owed.
    assert (payout.state, payout.amount_fen, payout.currency) == (PayoutState.payable, 9_500, "CNY")
    assert payout.fulfilment_id == uuid.UUID(order["fulfilments"][0]["id"])
    assert payout.destination is None and payout.provider_transfer_id is None
    assert await transfer_jobs(session, payout) == []


async def test_a_stripe_order_is_transferred_once_even_when_the_answer_is_lost(
    api, users, stripe_shelf, session, fake_stripe
):
    order = await paid_by_stripe(api, users, fake_stripe, [(stripe_shelf["product"], 3)])
    await ship_and_deliver(api, users, order)
    assert await recognise(session, order) == 1
    [payout] = await payouts_of(session, order)
    assert (payout.state, payout.amount_fen) == (PayoutState.pending, 9_500)
    assert payout.destination == stripe_shelf["coop"].stripe_account_id
    [job] = await transfer_jobs(session, payout)
    assert job.payload == {"payout_id": str(payout.id)}

    # Stripe makes the transfer but the answer never arrives: the client retries
    # with the same key and gets the first answer back.
    fake_stripe.state.timeout_next(1, seconds=5, applied=True, endpoint=TRANSFERS)
    for _ in range(2):  # the job, run twice
        await payouts.transfer_payout(session, {"payout_id": str(payout.id)})
    [payout] = await payouts_of(session, order)
    assert payout.state is PayoutState.transferred
    made = [
        t for t in fake_stripe.state.transfers.values() if t["id"] == payout.provider_transfer_id
    ]
    assert len(made) == 1
    assert [
        t
        for t in fake_stripe.state.transfers.values()
        if t["metadata"].get("payout_id") == str(payout.id)
    ] == made
    assert {k: made[0][k] for k in ("amount", "currency", "destination", "transfer_group")} == {
        "amount": 9_500,
        "currency": "cny",
        "destination": stripe_shelf["coop"].stripe_account_id,
        "transfer_group": f"order:{order['id']}",
    }
    assert made[0]["metadata"] == {
        "payout_id": str(payout.id),
        "fulfilment_id": order["fulfilments"][0]["id"],
        "order_id": order["id"],
    }
    sent = requests_for(fake_stripe, payout)
    assert len(sent) == 2 and sent[1].replayed  # the library's retry, answered from the key


async def test_stripe_down_leaves_the_payout_pending_and_the_worker_retries(
    api, users, stripe_shelf, session, sessionmaker, fake_stripe
):
    order = await paid_by_stripe(api, users, fake_stripe, [(stripe_shelf["product"], 1)])
    await ship_and_deliver(api, users, order)
    await recognise(session, order)
    [payout] = await payouts_of(session, order)
    fake_stripe.state.fail_next(1, status=503, endpoint=TRANSFERS, should_retry=False)
    worker = Worker(sessionmaker, load_handlers(), concurrency=1, name="settlements-test")
    while await worker.run_once():
        pass
    [job] = await transfer_jobs(session, payout)
    assert job.finished_at is None and job.failed_at is None and job.attempts == 1
    assert job.last_error and "ProviderError" in job.last_error
    assert (await payouts_of(session, order))[0].state is PayoutState.pending
    # The back-off has passed.
    await session.execute(text("UPDATE jobs SET run_at = now() WHERE id = :id"), {"id": job.id})
    while await worker.run_once():
        pass
    [payout] = await payouts_of(session, order)
    assert payout.state is PayoutState.transferred
    assert len(requests_for(fake_stripe, payout)) == 2
    assert sum(1 for r in requests_for(fake_stripe, payout) if r.status == 200) == 1


async def test_a_pending_payout_whose_job_gave_up_gets_a_new_one(
    api, users, stripe_shelf, session, fake_stripe
):
    order = await paid_by_stripe(api, users, fake_stripe, [(stripe_shelf["product"], 1)])
    await ship_and_deliver(api, users, order)
    await recognise(session, order)
    [payout] = await payouts_of(session, order)
    await payouts.resume_transfers(session)
    assert len(await transfer_jobs(session, payout)) == 1  # the first job is still due
    await session.execute(
        text("UPDATE jobs SET failed_at = now() WHERE kind = :kind AND dedupe_key = :key"),
        {"kind": payouts.TRANSFER_JOB, "key": str(payout.id)},
    )
    await session.execute(
        text("UPDATE payouts SET updated_at = now() - interval '2 hours' WHERE id = :id"),
        {"id": payout.id},
    )
    await payouts.resume_transfers(session)
    jobs = await transfer_jobs(session, payout)
    assert len(jobs) == 2 and sum(1 for j in jobs if j.failed_at is None) == 1


async def test_a_disputed_order_is_held_and_nothing_is_transferred(
    api, users, stripe_shelf, session, fake_stripe
):
    order = await paid_by_stripe(api, users, fake_stripe, [(stripe_shelf["product"], 1)])
    await dispute(api, order)
    await ship_and_deliver(api, users, order)
    await recognise(session, order)
    [payout] = await payouts_of(session, order)
    assert payout.state is PayoutState.held
    assert await transfer_jobs(session, payout) == []
    assert requests_for(fake_stripe, payout) == []


async def test_a_dispute_after_the_payout_holds_it_before_the_transfer(
    api, users, stripe_shelf, session, fake_stripe
):
    order = await paid_by_stripe(api, users, fake_stripe, [(stripe_shelf["product"], 1)])
    await ship_and_deliver(api, users, order)
    await recognise(session, order)
    await dispute(api, order)
    [payout] = await payouts_of(session, order)
    await payouts.transfer_payout(session, {"payout_id": str(payout.id)})
    [payout] = await payouts_of(session, order)
    assert payout.state is PayoutState.held
    assert requests_for(fake_stripe, payout) == []


async def test_a_dispute_won_releases_the_held_payout_to_its_transfer(
    api, users, stripe_shelf, session, fake_stripe
):
    order = await paid_by_stripe(api, users, fake_stripe, [(stripe_shelf["product"], 1)])
    await dispute(api, order)
    await ship_and_deliver(api, users, order)
    await recognise(session, order)
    [payout] = await payouts_of(session, order)
    assert payout.state is PayoutState.held
    await dispute(api, order, "closed", "won")
    [payout] = await payouts_of(session, order)
    assert payout.state is PayoutState.pending
    [job] = await transfer_jobs(session, payout)
    await payouts.transfer_payout(session, job.payload)
    [payout] = await payouts_of(session, order)
    assert payout.state is PayoutState.transferred
    assert len(requests_for(fake_stripe, payout)) == 1


async def test_a_dispute_lost_keeps_the_payout_held_and_takes_the_income_back(
    api, users, stripe_shelf, session, fake_stripe
):
    order = await paid_by_stripe(api, users, fake_stripe, [(stripe_shelf["product"], 2)])
    await ship_and_deliver(api, users, order)
    await recognise(session, order)
    await dispute(api, order)
    await dispute(api, order, "closed", "lost")
    [payout] = await payouts_of(session, order)
    await payouts.transfer_payout(session, {"payout_id": str(payout.id)})
    [payout] = await payouts_of(session, order)
    assert payout.state is PayoutState.held
    assert requests_for(fake_stripe, payout) == []
    # The chargeback is money returned: every party's part of the line goes back to zero.
    held = await session.scalar(
        select(func.sum(LedgerEntry.amount_fen)).where(
            LedgerEntry.order_id == uuid.UUID(order["id"])
        )
    )
    assert held == 0
    # Closing again (Stripe retries, or a second delivery) changes nothing more.
    await dispute(api, order, "closed", "lost")
    assert (
        await session.scalar(
            select(func.sum(LedgerEntry.amount_fen)).where(
                LedgerEntry.order_id == uuid.UUID(order["id"])
            )
        )
        == 0
    )


async def test_a_dispute_won_reported_before_its_start_leaves_nothing_held(
    api, users, stripe_shelf, session, fake_stripe
):
    order = await paid_by_stripe(api, users, fake_stripe, [(stripe_shelf["product"], 1)])
    await dispute(api, order, "closed", "won")
    await dispute(api, order)  # the older event, delivered late
    await ship_and_deliver(api, users, order)
    await recognise(session, order)
    [payout] = await payouts_of(session, order)
    assert payout.state is PayoutState.pending


async def test_a_dispute_lost_without_its_start_still_holds_the_payout(
    api, users, stripe_shelf, session, fake_stripe
):
    order = await paid_by_stripe(api, users, fake_stripe, [(stripe_shelf["product"], 1)])
    await dispute(api, order, "closed", "lost")
    await ship_and_deliver(api, users, order)
    await recognise(session, order)
    [payout] = await payouts_of(session, order)
    assert (payout.state, payout.amount_fen) == (PayoutState.held, 0)


async def test_stripe_refusing_the_transfer_fails_the_payout_with_its_reason(
    api, users, stripe_shelf, session, fake_stripe
):
    stripe_shelf["coop"].stripe_account_id = "not-an-account"
    await session.flush()
    order = await paid_by_stripe(api, users, fake_stripe, [(stripe_shelf["product"], 1)])
    await ship_and_deliver(api, users, order)
    await recognise(session, order)
    [payout] = await payouts_of(session, order)
    await payouts.transfer_payout(session, {"payout_id": str(payout.id)})
    [payout] = await payouts_of(session, order)
    assert payout.state is PayoutState.failed
    assert payout.last_error and "resource_missing" in payout.last_error


async def test_a_stripe_order_without_a_connected_account_is_payable(
    api, users, world, session, fake_stripe
):
    coop = await world.cooperative()
    product = await supplied_product(world, coop, [], price_fen=2_000)
    order = await paid_by_stripe(api, users, fake_stripe, [(product, 1)])
    await ship_and_deliver(api, users, order)
    await recognise(session, order)
    [payout] = await payouts_of(session, order)
    assert (payout.state, payout.amount_fen, payout.destination) == (
        PayoutState.payable,
        1_900,
        None,
    )
    assert await transfer_jobs(session, payout) == []


async def test_the_backfill_records_payouts_missing_for_recognised_fulfilments(
    client, users, world, session
):
    coop = await world.cooperative()
    product = await supplied_product(world, coop, [], price_fen=1_000)
    order = await delivered_cod_order(client, users, [(product, 2)])
    await recognise(session, order)
    await session.execute(
        text("DELETE FROM payouts WHERE order_id = :id"), {"id": uuid.UUID(order["id"])}
    )
    assert await payouts.backfill_payouts(session) == 1
    assert await payouts.backfill_payouts(session) == 0
    [payout] = await payouts_of(session, order)
    assert (payout.state, payout.amount_fen) == (PayoutState.payable, 1_900)


# --- the settlement report -----------------------------------------------------------------


def this_month() -> str:
    return f"{datetime.now(UTC).astimezone(ledger.CHINA):%Y-%m}"


async def refund(client, users, order, coop, **body) -> None:
    manager = await users.make(Role.manager, cooperative_id=coop.id)
    response = await client.post(
        f"/v1/orders/{order['id']}/refunds",
        json={"reason": "damaged in transit", **body},
        headers=users.auth(manager) | key(),
    )
    assert response.status_code == 201, response.text


@pytest.fixture
async def month_of_trade(client, users, world, session) -> dict[str, Any]:
    """Two delivered cash orders of one cooperative this month, and a refund after delivery."""
    coop = await world.cooperative()
    a = await world.household(head="李春花")
    b = await world.household(head="赵铁柱")
    product = await supplied_product(world, coop, [(a, 6_000), (b, 2_500)], price_fen=3_333)
    first = await delivered_cod_order(client, users, [(product, 3)])
    second = await delivered_cod_order(client, users, [(product, 2)])
    await recognise(session, first)
    await recognise(session, second)
    line = first["fulfilments"][0]["lines"][0]["id"]
    await refund(client, users, first, coop, lines=[{"line_id": line, "quantity": 1}])
    return {"coop": coop, "a": a, "b": b, "first": first, "second": second}


async def test_the_settlement_report_adds_up_to_the_fen(month_of_trade, users, session):
    coop, a, b = month_of_trade["coop"], month_of_trade["a"], month_of_trade["b"]
    manager = await users.make(Role.manager, cooperative_id=coop.id)
    report = await settlements.settlement(
        session, manager, coop.id, period=settlements.Period.month(this_month())
    )
    [t] = report.totals
    # Gross 9,999 + 6,666; fees 499 + 333; nets at delivery 9,500 + 6,333; then one unit
    # of the first order back: its net falls to 6,334 (3,166 less).
    assert (t.currency, t.fulfilments, t.lines) == ("CNY", 2, 2)
    assert (t.gross_fen, t.fees_fen) == (16_665, 832)
    assert (t.refunds_before_delivery_fen, t.refunds_after_delivery_fen) == (0, 3_166)
    assert t.net_fen == 9_500 + 6_333 - 3_166
    assert t.households_fen + t.cooperative_fen == t.net_fen
    assert t.gross_fen - t.fees_fen - t.refunds_fen == t.net_fen
    ledger_total = await session.scalar(
        select(func.sum(LedgerEntry.amount_fen)).where(LedgerEntry.cooperative_id == coop.id)
    )
    assert t.net_fen == ledger_total
    # Both payouts were owed at their amount at delivery; the refund is taken back.
    assert t.payouts == {PayoutState.payable: settlements.PayoutSum(2, 15_833)}
    assert t.refunded_after_settlement_fen == -3_166
    earned = {h.household_id: h for h in report.households}
    assert set(earned) == {a.id, b.id}
    assert sum(h.earned_fen for h in report.households) == t.households_fen
    # 60 % of 9,500 + 60 % of 6,333 (3,799.8, the larger remainder), less 60 % of 3,166.
    assert (earned[a.id].recognised_fen, earned[a.id].adjustments_fen) == (5_700 + 3_800, -1_900)
    assert (earned[a.id].head_name, earned[b.id].head_name) == ("李春花", "赵铁柱")
    assert report.households[0].household_id == a.id  # the largest earner first


async def test_managers_read_their_settlements_over_http(client, users, month_of_trade, session):
    coop = month_of_trade["coop"]
    manager = await users.make(Role.manager, cooperative_id=coop.id)
    url = f"/v1/cooperatives/{coop.id}/settlements"
    response = await client.get(url, params={"period": this_month()}, headers=users.auth(manager))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["period"]["label"] == this_month()
    [t] = body["totals"]
    assert t["net_fen"] == t["households_fen"] + t["cooperative_fen"] == 12_667
    assert t["gross_fen"] - t["fees_fen"] - t["refunds_fen"] == t["net_fen"]
    assert t["payouts"]["payable"] == {"count": 2, "amount_fen": 15_833}
    assert t["payouts"]["held"] == {"count": 0, "amount_fen": 0}
    assert {h["head_name"] for h in body["households"]} == {"李春花", "赵铁柱"}
    # Reading the names is recorded, as for the member list.
    read = await session.scalar(
        select(func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.action == "cooperative.settlements.read")
    )
    assert read == 2

    months = await client.get(url, headers=users.auth(manager))
    assert months.status_code == 200, months.text
    assert months.json()["items"][0]["month"] == this_month()
    assert months.json()["items"][0]["totals"][0]["net_fen"] == 12_667
    assert months.json()["next_cursor"] is None

    today = datetime.now(UTC).astimezone(ledger.CHINA).date().isoformat()
    ranged = await client.get(url, params={"from": today, "to": today}, headers=users.auth(manager))
    assert ranged.status_code == 200, ranged.text
    assert ranged.json()["totals"] == body["totals"]


async def test_another_cooperatives_manager_and_buyers_are_refused(
    client, users, world, month_of_trade
):
    url = f"/v1/cooperatives/{month_of_trade['coop'].id}/settlements"
    other = await users.make(Role.manager, cooperative_id=(await world.cooperative()).id)
    buyer = await users.make(Role.buyer)
    for who in (other, buyer):
        response = await client.get(url, params={"period": this_month()}, headers=users.auth(who))
        assert response.status_code == 403, response.text
    admin = await users.make(Role.admin)
    missing = await client.get(
        f"/v1/cooperatives/{uuid.uuid4()}/settlements", headers=users.auth(admin)
    )
    assert missing.status_code == 404
    assert (await client.get(url, headers=users.auth(admin))).status_code == 200


async def test_the_months_are_listed_newest_first_a_window_at_a_time(
    client, users, month_of_trade, session
):
    coop = month_of_trade["coop"]
    # One more entry, dated five months back (inserting is what the ledger allows).
    await session.execute(
        text(
            "INSERT INTO ledger_entries (line_id, order_id, fulfilment_id, product_id,"
            " cooperative_id, county_code, buyer_id, household_id, kind, amount_fen, currency,"
            " year, effective_at)"
            " SELECT line_id, order_id, fulfilment_id, product_id, cooperative_id, county_code,"
            " buyer_id, NULL, 'adjustment', -100, currency, year,"
            " effective_at - interval '150 days'"
            " FROM ledger_entries WHERE cooperative_id = :coop LIMIT 1"
        ),
        {"coop": coop.id},
    )
    manager = await users.make(Role.manager, cooperative_id=coop.id)
    url = f"/v1/cooperatives/{coop.id}/settlements"
    first = (await client.get(url, params={"limit": 2}, headers=users.auth(manager))).json()
    assert [m["month"] for m in first["items"]] == [this_month()]
    assert first["next_cursor"] is not None
    months, cursor = [], first["next_cursor"]
    while cursor:
        page = (
            await client.get(
                url, params={"limit": 2, "cursor": cursor}, headers=users.auth(manager)
            )
        ).json()
        months += page["items"]
        cursor = page["next_cursor"]
    [older] = months
    assert older["totals"] == [
        {
            "currency": "CNY",
            "recognised_fen": 0,
            "adjustments_fen": -100,
            "net_fen": -100,
            "households_fen": 0,
            "cooperative_fen": -100,
        }
    ]
    assert older["month"] < this_month()


@pytest.mark.parametrize(
    "params",
    [
        {"period": "2026-13"},
        {"period": "2026-5"},
        {"from": "2026-05-01"},
        {"from": "2026-05-10", "to": "2026-05-01"},
        {"period": "2026-05", "from": "2026-05-01", "to": "2026-05-02"},
    ],
)
async def test_bad_periods_are_422(client, users, world, params):
    coop = await world.cooperative()
    manager = await users.make(Role.manager, cooperative_id=coop.id)
    response = await client.get(
        f"/v1/cooperatives/{coop.id}/settlements", params=params, headers=users.auth(manager)
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_periods_follow_the_china_calendar():
    may = settlements.Period.month("2026-05")
    start, end = may.bounds()
    assert (start.isoformat(), end.isoformat()) == (
        "2026-04-30T16:00:00+00:00",
        "2026-05-31T16:00:00+00:00",
    )
    assert may.label == "2026-05"
    assert settlements.Period.month("2024-02").last.day == 29
    days = settlements.Period.between(may.first, may.first)
    assert days.label == "2026-05-01/2026-05-01"
