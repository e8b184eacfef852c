"""Stripe webhooks applied once and forward-only; refunds; cancellation; reservation expiry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update

from app.main import create_app
from services.catalog import service as catalog
from services.catalog.models import Product
from services.errors import Invalid
from services.jobs.models import Job
from services.orders import flows
from services.orders.models import Fulfilment, Order, OrderEvent, OrderLine, OrderStatus
from services.payments.models import Payment, Refund, StripeEvent
from services.users.models import Role
from tests.fakes.stripe_server import make_event
from tests.orders_helpers import cart, key, shelf_with_shares, signed


@pytest.fixture
async def stripe_app(stripe_settings, sessionmaker):
    application = create_app(stripe_settings)
    application.state.sessionmaker = sessionmaker
    yield application
    await application.state.stripe.aclose()


@pytest.fixture
async def api(stripe_app):
    transport = httpx.ASGITransport(app=stripe_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
async def shelf(world) -> dict[str, Any]:
    return await shelf_with_shares(world)


async def place(api, users, shelf, *lines, method="stripe"):
    buyer = await users.make(Role.buyer)
    lines = lines or ((shelf["chicken"], 2), (shelf["tea"], 1))
    response = await api.post(
        "/v1/checkout", headers=users.auth(buyer) | key(), json=cart(*lines, method=method)
    )
    assert response.status_code == 201, response.text
    return buyer, response.json()


def intent_of(order: dict[str, Any]) -> str:
    return order["client_secret"].split("_secret_")[0]


def intent_event(
    kind: str,
    order: dict[str, Any],
    *,
    status: str,
    created: int | None = None,
    event_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    obj = {
        "id": intent_of(order),
        "object": "payment_intent",
        "amount": order["total_fen"],
        "amount_received": order["total_fen"] if status == "succeeded" else 0,
        "currency": "cny",
        "status": status,
        "metadata": {"order_id": order["id"]},
        **extra,
    }
    return make_event(kind, obj, event_id=event_id, created=created)


async def deliver(api, event: dict[str, Any]) -> httpx.Response:
    payload, headers = signed(event)
    return await api.post("/v1/webhooks/stripe", content=payload, headers=headers)


async def order_row(session, order_id) -> Order:
    return (
        await session.scalars(
            select(Order).where(Order.id == order_id).execution_options(populate_existing=True)
        )
    ).one()


async def payment_row(session, order_id) -> Payment:
    return (
        await session.scalars(
            select(Payment)
            .where(Payment.order_id == order_id)
            .execution_options(populate_existing=True)
        )
    ).one()


async def test_payment_succeeded_confirms_the_order_and_sells_the_stock(api, users, shelf, session):
    _, order = await place(api, users, shelf)
    response = await deliver(
        api, intent_event("payment_intent.succeeded", order, status="succeeded")
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "duplicate": False, "outcome": "order-confirmed"}
    row = await order_row(session, order["id"])
    assert (row.status.value, row.payment_status.value) == ("confirmed", "paid")
    assert row.paid_fen == order["total_fen"]
    chicken = await session.get(Product, shelf["chicken"].id, populate_existing=True)
    assert (chicken.stock, chicken.reserved, chicken.sold_count) == (8, 0, 2)


async def products_updates(session) -> tuple[int, int]:
    """Updates of products rows in this transaction so far: all of them, and the HOT ones."""
    row = (
        await session.execute(
            text(
                "SELECT pg_stat_get_xact_tuples_updated('products'::regclass) AS updated,"
                " pg_stat_get_xact_tuples_hot_updated('products'::regclass) AS hot"
            )
        )
    ).one()
    return row.updated, row.hot


async def test_reserving_and_selling_stock_touch_no_index_of_products(api, users, shelf, session):
    """Checkout and payment update the products rows in place (HOT): no index entries.

    Every order updates its products rows twice; while an index covered a column
    those updates change, each of them wrote a new entry into every products index.
    """
    updated_before, hot_before = await products_updates(session)
    _, order = await place(api, users, shelf)
    response = await deliver(
        api, intent_event("payment_intent.succeeded", order, status="succeeded")
    )
    assert response.json()["outcome"] == "order-confirmed"
    updated, hot = await products_updates(session)
    assert updated - updated_before == 4  # two products, reserved then sold
    assert hot - hot_before == 4


async def test_payment_takes_the_share_snapshot_in_force_when_it_is_paid(
    api, users, shelf, session, world
):
    _, order = await place(api, users, shelf)
    paid_at = datetime.now(UTC)
    await catalog.set_shares(
        session,
        world.admin,
        shelf["chicken"].id,
        [catalog.Share(shelf["b"].id, 10_000)],
        now=paid_at - timedelta(milliseconds=1),
    )
    event = intent_event("payment_intent.succeeded", order, status="succeeded")
    response = await deliver(api, event)
    assert response.json()["outcome"] == "order-confirmed"
    lines = {
        line.product_id: line
        for line in (
            await session.scalars(
                select(OrderLine)
                .where(OrderLine.order_id == order["id"])
                .execution_options(populate_existing=True)
            )
        ).all()
    }
    chicken, tea = lines[shelf["chicken"].id], lines[shelf["tea"].id]
    assert chicken.shares == [{"household_id": str(shelf["b"].id), "basis_points": 10_000}]
    assert chicken.share_set_id is not None and chicken.shares_at >= paid_at
    assert (tea.share_set_id, tea.shares) == (None, [])
    fulfilments = (
        await session.scalars(
            select(Fulfilment.status)
            .where(Fulfilment.order_id == order["id"])
            .execution_options(populate_existing=True)
        )
    ).all()
    assert {f.value for f in fulfilments} == {"ready"}
    payment = await payment_row(session, order["id"])
    assert payment.state.value == "succeeded"
    assert payment.succeeded_at == datetime.fromtimestamp(event["created"], UTC)
    stored = await session.get(StripeEvent, event["id"], populate_existing=True)
    assert stored is not None and stored.outcome == "order-confirmed"


_INTENT_SUCCEEDED = text(
    "SELECT stripe_intent_succeeded(:id, :type, NULL, now(), false, '{}'::jsonb, "
    ":intent, :amount, now())"
)


async def test_the_one_statement_path_confirms_the_usual_payment(api, users, shelf, session):
    _, order = await place(api, users, shelf)
    event = intent_event("payment_intent.succeeded", order, status="succeeded")
    params = {"id": event["id"], "type": event["type"], "intent": intent_of(order)}
    outcome = await session.scalar(_INTENT_SUCCEEDED, params | {"amount": order["total_fen"]})
    assert outcome == "order-confirmed"
    row = await order_row(session, order["id"])
    assert (row.status.value, row.payment_status.value) == ("confirmed", "paid")
    assert row.paid_fen == order["total_fen"] and row.reserved_until is None
    chicken = await session.get(Product, shelf["chicken"].id, populate_existing=True)
    assert (chicken.stock, chicken.reserved, chicken.sold_count) == (8, 0, 2)
    again = await session.scalar(_INTENT_SUCCEEDED, params | {"amount": order["total_fen"]})
    assert again == "duplicate"


async def test_the_one_statement_path_leaves_anything_unusual_untouched(api, users, shelf, session):
    # A succeeded intent whose order is no longer awaiting payment is not the usual
    # case: the statement writes nothing and the transactional path takes it over.
    _, order = await place(api, users, shelf)
    await session.execute(
        update(Order).where(Order.id == order["id"]).values(status=OrderStatus.cancelled)
    )
    event = intent_event("payment_intent.succeeded", order, status="succeeded")
    outcome = await session.scalar(
        _INTENT_SUCCEEDED,
        {"id": event["id"], "type": event["type"], "intent": intent_of(order), "amount": 1},
    )
    assert outcome == "deferred"
    assert await session.get(StripeEvent, event["id"]) is None
    payment = await payment_row(session, order["id"])
    assert payment.state.value == "pending"


async def test_the_same_event_ten_times_has_one_effect(api, users, shelf, session):
    _, order = await place(api, users, shelf)
    event = intent_event("payment_intent.succeeded", order, status="succeeded")
    answers = [await deliver(api, event) for _ in range(10)]
    assert [a.json()["duplicate"] for a in answers] == [False] + [True] * 9
    chicken = await session.get(Product, shelf["chicken"].id, populate_existing=True)
    assert chicken.sold_count == 2
    stored = await session.scalar(select(func.count()).select_from(StripeEvent))
    assert stored == 1
    moves = await session.scalar(
        select(func.count())
        .select_from(OrderEvent)
        .where(OrderEvent.order_id == order["id"], OrderEvent.to_status == "confirmed")
    )
    assert moves == 1


async def test_two_events_for_one_change_apply_once(api, users, shelf, session):
    _, order = await place(api, users, shelf)
    for _ in range(2):  # distinct event ids, same object and type
        await deliver(api, intent_event("payment_intent.succeeded", order, status="succeeded"))
    chicken = await session.get(Product, shelf["chicken"].id, populate_existing=True)
    assert chicken.sold_count == 2


async def test_a_stale_failure_after_success_changes_nothing(api, users, shelf, session):
    _, order = await place(api, users, shelf)
    now = int(time.time())
    await deliver(
        api, intent_event("payment_intent.succeeded", order, status="succeeded", created=now)
    )
    late = await deliver(
        api,
        intent_event(
            "payment_intent.payment_failed",
            order,
            status="requires_payment_method",
            created=now - 60,
            last_payment_error={"message": "Your card was declined."},
        ),
    )
    assert late.json()["outcome"] == "stale"
    cancelled = await deliver(
        api, intent_event("payment_intent.canceled", order, status="canceled")
    )
    assert cancelled.json()["outcome"] == "stale"
    row = await order_row(session, order["id"])
    assert (row.status.value, row.payment_status.value) == ("confirmed", "paid")


async def test_a_failure_before_success_keeps_the_order_waiting(api, users, shelf, session):
    _, order = await place(api, users, shelf)
    await deliver(
        api,
        intent_event(
            "payment_intent.payment_failed",
            order,
            status="requires_payment_method",
            last_payment_error={"message": "declined"},
        ),
    )
    row = await order_row(session, order["id"])
    assert row.status.value == "awaiting_payment"
    payment = await payment_row(session, order["id"])
    assert (payment.failures, payment.last_failure) == (1, "declined")
    await deliver(api, intent_event("payment_intent.succeeded", order, status="succeeded"))
    assert (await order_row(session, order["id"])).status.value == "confirmed"


async def test_cancelled_intent_cancels_the_order_and_returns_stock(api, users, shelf, session):
    _, order = await place(api, users, shelf)
    response = await deliver(api, intent_event("payment_intent.canceled", order, status="canceled"))
    assert response.json()["outcome"] == "order-cancelled"
    chicken = await session.get(Product, shelf["chicken"].id, populate_existing=True)
    assert (chicken.stock, chicken.reserved) == (10, 0)


async def test_bad_or_missing_signature_is_400_and_stores_nothing(api, users, shelf, session):
    _, order = await place(api, users, shelf)
    payload, headers = signed(intent_event("payment_intent.succeeded", order, status="succeeded"))
    forged = await api.post(
        "/v1/webhooks/stripe",
        content=payload,
        headers=headers | {"Stripe-Signature": "t=1,v1=deadbeef"},
    )
    missing = await api.post(
        "/v1/webhooks/stripe", content=payload, headers={"Content-Type": "application/json"}
    )
    tampered = await api.post(
        "/v1/webhooks/stripe", content=payload.replace(b"succeeded", b"canceled"), headers=headers
    )
    for response in (forged, missing, tampered):
        assert response.status_code == 400
        assert response.json()["type"] == "/problems/invalid-signature"
    assert await session.scalar(select(func.count()).select_from(StripeEvent)) == 0
    assert (await order_row(session, order["id"])).status.value == "awaiting_payment"


async def test_unknown_event_types_are_stored_and_acknowledged(api, session):
    response = await deliver(
        api, make_event("customer.created", {"id": "cus_1", "object": "customer"})
    )
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"
    assert await session.scalar(select(func.count()).select_from(StripeEvent)) == 1


async def test_dispute_holds_the_settlement(api, users, shelf, session):
    _, order = await place(api, users, shelf)
    await deliver(api, intent_event("payment_intent.succeeded", order, status="succeeded"))
    await deliver(
        api,
        make_event(
            "charge.dispute.created",
            {
                "id": "dp_1",
                "object": "dispute",
                "amount": order["total_fen"],
                "payment_intent": intent_of(order),
                "status": "needs_response",
                "reason": "fraudulent",
            },
        ),
    )
    assert (await order_row(session, order["id"])).settlement_hold is True


async def paid_order(api, users, shelf, fake_stripe):
    buyer, order = await place(api, users, shelf)
    fake_stripe.state.confirm(intent_of(order))  # Stripe took the money, then tells us
    await deliver(api, intent_event("payment_intent.succeeded", order, status="succeeded"))
    return buyer, order


async def test_manager_refunds_a_line_and_refunds_add_up_to_what_was_paid(
    api, users, shelf, session, fake_stripe
):
    _, order = await paid_order(api, users, shelf, fake_stripe)
    manager = await users.make(Role.manager, cooperative_id=shelf["first"].id)
    line = next(
        ln
        for f in order["fulfilments"]
        for ln in f["lines"]
        if ln["product_id"] == str(shelf["chicken"].id)
    )
    url = f"/v1/orders/{order['id']}/refunds"
    one = await api.post(
        url,
        headers=users.auth(manager) | key(),
        json={"lines": [{"line_id": line["id"], "quantity": 1}]},
    )
    assert one.status_code == 201, one.text
    assert (one.json()["amount_fen"], one.json()["state"]) == (16800, "succeeded")
    row = await order_row(session, order["id"])
    assert (row.refunded_fen, row.payment_status.value) == (16800, "partially_refunded")
    too_many = await api.post(
        url,
        headers=users.auth(manager) | key(),
        json={"lines": [{"line_id": line["id"], "quantity": 2}]},
    )
    assert too_many.status_code == 409
    rest = await api.post(url, headers=users.auth(manager) | key(), json={"amount_fen": 16800})
    assert rest.status_code == 201, rest.text
    beyond = await api.post(url, headers=users.auth(manager) | key(), json={"amount_fen": 1})
    assert beyond.status_code == 409
    admin = await users.make(Role.admin)
    tea_and_rest = await api.post(url, headers=users.auth(admin) | key(), json={"amount_fen": 9900})
    assert tea_and_rest.status_code == 201
    row = await order_row(session, order["id"])
    assert (row.refunded_fen, row.payment_status.value) == (row.paid_fen, "refunded")
    again = await api.post(url, headers=users.auth(admin) | key(), json={"amount_fen": 1})
    assert again.status_code == 409


async def test_refund_retry_with_the_same_key_refunds_once(api, users, shelf, session, fake_stripe):
    _, order = await paid_order(api, users, shelf, fake_stripe)
    admin = await users.make(Role.admin)
    headers = users.auth(admin) | key()
    url = f"/v1/orders/{order['id']}/refunds"
    first = await api.post(url, headers=headers, json={"amount_fen": 500})
    second = await api.post(url, headers=headers, json={"amount_fen": 500})
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    count = await session.scalar(
        select(func.count()).select_from(Refund).where(Refund.order_id == order["id"])
    )
    assert count == 1


async def test_manager_of_another_cooperative_cannot_refund(api, users, shelf, fake_stripe):
    _, order = await paid_order(api, users, shelf, fake_stripe)
    stranger = await users.make(Role.manager)
    response = await api.post(
        f"/v1/orders/{order['id']}/refunds",
        headers=users.auth(stranger) | key(),
        json={"amount_fen": 100},
    )
    assert response.status_code == 404


async def test_refund_before_payment_is_409(api, users, shelf):
    _, order = await place(api, users, shelf)
    admin = await users.make(Role.admin)
    response = await api.post(
        f"/v1/orders/{order['id']}/refunds",
        headers=users.auth(admin) | key(),
        json={"amount_fen": 100},
    )
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/not-paid"


async def test_buyer_cancels_a_paid_order_and_gets_the_money_back(
    api, users, shelf, session, fake_stripe
):
    buyer, order = await paid_order(api, users, shelf, fake_stripe)
    response = await api.post(f"/v1/orders/{order['id']}/cancel", headers=users.auth(buyer))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    refund = (await session.scalars(select(Refund).where(Refund.order_id == order["id"]))).one()
    assert refund.amount_fen == order["total_fen"]
    chicken = await session.get(Product, shelf["chicken"].id, populate_existing=True)
    assert (chicken.stock, chicken.reserved, chicken.sold_count) == (10, 0, 0)
    twice = await api.post(f"/v1/orders/{order['id']}/cancel", headers=users.auth(buyer))
    assert twice.status_code == 409
    assert twice.json()["from_status"] == "cancelled"
    assert twice.json()["to_status"] == "cancelled"


async def test_nobody_else_sees_or_cancels_a_buyers_order(api, users, shelf):
    _, order = await place(api, users, shelf)
    other = await users.make(Role.buyer)
    assert (
        await api.get(f"/v1/orders/{order['id']}", headers=users.auth(other))
    ).status_code == 404
    assert (
        await api.post(f"/v1/orders/{order['id']}/cancel", headers=users.auth(other))
    ).status_code == 404


async def test_managers_see_only_their_own_fulfilments(api, users, shelf):
    _, order = await place(api, users, shelf, method="cod")
    manager = await users.make(Role.manager, cooperative_id=shelf["second"].id)
    shown = (await api.get(f"/v1/orders/{order['id']}", headers=users.auth(manager))).json()
    assert [f["cooperative_id"] for f in shown["fulfilments"]] == [str(shelf["second"].id)]
    queue = (
        await api.get(
            f"/v1/cooperatives/{shelf['second'].id}/fulfilments", headers=users.auth(manager)
        )
    ).json()
    assert [f["order_id"] for f in queue["items"]] == [order["id"]]
    listed = (await api.get("/v1/orders", headers=users.auth(manager))).json()
    assert [o["id"] for o in listed["items"]] == [order["id"]]
    forbidden = await api.get(
        f"/v1/cooperatives/{shelf['first'].id}/fulfilments", headers=users.auth(manager)
    )
    assert forbidden.status_code == 403


async def test_expiry_cancels_unpaid_orders_and_returns_stock_once(api, users, shelf, session):
    _, order = await place(api, users, shelf)
    later = datetime.now(UTC) + timedelta(minutes=31)

    async def enqueue(s, kind, payload, **kw):
        from services.jobs.service import enqueue as real

        return await real(s, kind, payload, **kw)

    assert await flows.expire_due(session, now=later, enqueue=enqueue) == 1
    assert await flows.expire_due(session, now=later, enqueue=enqueue) == 0
    chicken = await session.get(Product, shelf["chicken"].id, populate_existing=True)
    assert (chicken.stock, chicken.reserved) == (10, 0)
    row = await order_row(session, order["id"])
    assert (row.status.value, row.cancel_reason) == ("cancelled", "reservation expired")
    jobs = (await session.scalars(select(Job).where(Job.kind == "payments.cancel_intent"))).all()
    assert [j.payload["intent_id"] for j in jobs] == [intent_of(order)]


async def test_payment_after_expiry_is_refunded(api, users, shelf, session):
    _, order = await place(api, users, shelf)
    from services.jobs.service import enqueue

    await flows.expire_due(session, now=datetime.now(UTC) + timedelta(hours=1), enqueue=enqueue)
    response = await deliver(
        api, intent_event("payment_intent.succeeded", order, status="succeeded")
    )
    assert response.json()["outcome"] == "late-payment-refunded"
    refund = (await session.scalars(select(Refund).where(Refund.order_id == order["id"]))).one()
    assert refund.amount_fen == order["total_fen"]
    jobs = (await session.scalars(select(Job).where(Job.kind == "payments.execute_refund"))).all()
    assert [j.payload["refund_id"] for j in jobs] == [str(refund.id)]


async def test_a_refund_made_in_the_stripe_dashboard_is_recorded(
    api, users, shelf, session, fake_stripe
):
    _, order = await paid_order(api, users, shelf, fake_stripe)
    response = await deliver(
        api,
        make_event(
            "refund.updated",
            {
                "id": "re_dashboard_1",
                "object": "refund",
                "amount": 1000,
                "currency": "cny",
                "status": "succeeded",
                "payment_intent": intent_of(order),
            },
        ),
    )
    assert response.json()["outcome"] == "external-refund-recorded"
    row = await order_row(session, order["id"])
    assert (row.refunded_fen, row.payment_status.value) == (1000, "partially_refunded")
    again = await deliver(
        api,
        make_event(
            "refund.updated",
            {
                "id": "re_dashboard_1",
                "object": "refund",
                "amount": 1000,
                "currency": "cny",
                "status": "succeeded",
                "payment_intent": intent_of(order),
            },
        ),
    )
    assert again.json()["outcome"] == "stale"
    assert (await order_row(session, order["id"])).refunded_fen == 1000


async def test_charge_refunded_settles_pending_refunds(
    api, users, shelf, session, fake_stripe, stripe_app
):
    _, order = await paid_order(api, users, shelf, fake_stripe)
    admin = await users.make(Role.admin)
    stripe_app.state.stripe, gateway = None, stripe_app.state.stripe  # Stripe unreachable now
    pending = await api.post(
        f"/v1/orders/{order['id']}/refunds",
        headers=users.auth(admin) | key(),
        json={"amount_fen": 700},
    )
    stripe_app.state.stripe = gateway
    assert pending.json()["state"] == "pending"
    response = await deliver(
        api,
        make_event(
            "charge.refunded",
            {
                "id": "ch_1",
                "object": "charge",
                "amount_refunded": 700,
                "payment_intent": intent_of(order),
            },
        ),
    )
    assert response.json()["outcome"] == "refunds-settled"
    refund = await session.get(Refund, pending.json()["id"], populate_existing=True)
    assert refund.state.value == "succeeded"
    assert (await order_row(session, order["id"])).refunded_fen == 700
    queued = (await session.scalars(select(Job).where(Job.kind == "payments.execute_refund"))).all()
    assert [j.payload["refund_id"] for j in queued] == [pending.json()["id"]]


async def test_worker_runs_the_refund_and_cancel_jobs_against_stripe(
    api, users, shelf, session, sessionmaker, fake_stripe, stripe_app
):
    """The queued jobs, run by a real worker: a refund deferred while Stripe was down
    goes through, and an expired order's intent is cancelled at Stripe."""
    from services.jobs.service import Worker, enqueue, load_handlers
    from services.payments import jobs

    _, paid = await paid_order(api, users, shelf, fake_stripe)
    _, unpaid = await place(api, users, shelf)
    admin = await users.make(Role.admin)
    fake_stripe.state.fail_next(3, status=500, endpoint="POST /v1/refunds")
    deferred = await api.post(
        f"/v1/orders/{paid['id']}/refunds",
        headers=users.auth(admin) | key(),
        json={"amount_fen": 1234},
    )
    assert deferred.json()["state"] == "pending"
    await flows.expire_due(session, now=datetime.now(UTC) + timedelta(hours=1), enqueue=enqueue)
    jobs.use_gateway(stripe_app.state.stripe)
    worker = Worker(sessionmaker, load_handlers(), concurrency=1, name="test-worker")
    while await worker.run_once():
        pass
    refund = await session.get(Refund, deferred.json()["id"], populate_existing=True)
    assert refund.state.value == "succeeded"
    assert (await order_row(session, paid["id"])).refunded_fen == 1234
    intent = await stripe_app.state.stripe.retrieve_payment_intent(intent_of(unpaid))
    assert intent.status == "canceled"


async def test_cash_collected_makes_a_cod_order_paid_and_sold(api, users, shelf, session):
    from services.payments import service as payments

    _, order = await place(api, users, shelf, method="cod")
    wrong = payments.record_cash_collected(session, order["id"], amount=1, now=datetime.now(UTC))
    with pytest.raises(Invalid, match="whole"):
        await wrong
    await payments.record_cash_collected(
        session, order["id"], amount=order["total_fen"], now=datetime.now(UTC)
    )
    await payments.record_cash_collected(
        session, order["id"], amount=order["total_fen"], now=datetime.now(UTC)
    )
    row = await order_row(session, order["id"])
    assert (row.payment_status.value, row.paid_fen) == ("paid", order["total_fen"])
    chicken = await session.get(Product, shelf["chicken"].id, populate_existing=True)
    assert (chicken.stock, chicken.reserved, chicken.sold_count) == (8, 0, 2)


async def test_a_refused_cod_parcel_cancels_the_order_and_returns_stock(api, users, shelf, session):
    from services.payments import service as payments

    _, order = await place(api, users, shelf, method="cod")
    await payments.record_cash_refused(
        session, order["id"], reason="parcel refused", actor_id=None, now=datetime.now(UTC)
    )
    row = await order_row(session, order["id"])
    assert (row.status.value, row.payment_status.value) == ("cancelled", "unpaid")
    chicken = await session.get(Product, shelf["chicken"].id, populate_existing=True)
    assert (chicken.stock, chicken.reserved, chicken.sold_count) == (10, 0, 0)


async def test_a_shipped_order_cannot_be_cancelled_by_its_buyer(api, users, shelf, session):
    buyer, order = await place(api, users, shelf, method="cod")
    row = await order_row(session, order["id"])
    row.status = OrderStatus.shipped
    await session.flush()
    response = await api.post(f"/v1/orders/{order['id']}/cancel", headers=users.auth(buyer))
    assert response.status_code == 409
    assert (response.json()["from_status"], response.json()["to_status"]) == (
        "shipped",
        "cancelled",
    )
    chicken = await session.get(Product, shelf["chicken"].id, populate_existing=True)
    assert chicken.reserved == 2, "nothing returned to stock"


async def test_a_refund_reported_before_its_payment_is_answered_503_and_applied_later(
    api, users, shelf, session
):
    _, order = await place(api, users, shelf)
    refund = make_event(
        "refund.created",
        {
            "id": "re_early_1",
            "object": "refund",
            "amount": 1000,
            "currency": "cny",
            "status": "succeeded",
            "payment_intent": intent_of(order),
        },
    )
    early = await deliver(api, refund)
    assert early.status_code == 503
    assert early.json()["type"].endswith("/event-out-of-order")
    assert await session.get(StripeEvent, refund["id"]) is None  # stored only once applied
    paid = await deliver(api, intent_event("payment_intent.succeeded", order, status="succeeded"))
    assert paid.status_code == 200
    again = await deliver(api, refund)  # Stripe's redelivery
    assert again.json()["outcome"] == "external-refund-recorded"
    assert (await order_row(session, order["id"])).refunded_fen == 1000
