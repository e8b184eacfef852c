"""Checkout with cash on delivery and Stripe: stock, splitting, fees, snapshots, idempotency."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.main import create_app
from services.catalog.models import Product
from services.db import driver_connection
from services.errors import Conflict
from services.idempotency.models import IdempotencyKey
from services.orders.models import Order, OrderLine, OrderStatus
from services.payments import service as payments
from services.payments.models import Payment
from services.payments.stripe import Intent
from services.users.models import Role
from tests.orders_helpers import cart, key, shelf_with_shares


@pytest.fixture
async def stripe_app(stripe_settings, sessionmaker):
    application = create_app(stripe_settings)
    application.state.sessionmaker = sessionmaker
    yield application
    await application.state.stripe.aclose()


@pytest.fixture
async def stripe_client(stripe_app):
    transport = httpx.ASGITransport(app=stripe_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
async def shelf(world) -> dict[str, Any]:
    return await shelf_with_shares(world)


async def stock_of(session, product) -> tuple[int, int, int]:
    row = (
        await session.execute(
            select(Product.stock, Product.reserved, Product.sold_count)
            .where(Product.id == product.id)
            .execution_options(populate_existing=True)
        )
    ).one()
    return row.stock, row.reserved, row.sold_count


async def test_cod_checkout_splits_per_cooperative_and_reserves_stock(
    client, users, shelf, session
):
    buyer = await users.make(Role.buyer)
    response = await client.post(
        "/v1/checkout",
        headers=users.auth(buyer) | key(),
        json=cart((shelf["chicken"], 2), (shelf["tea"], 1)),
    )
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "confirmed"
    assert order["payment_status"] == "unpaid"
    assert order["total_fen"] == 2 * 16800 + 9900
    assert order["client_secret"] is None
    assert {f["cooperative_id"] for f in order["fulfilments"]} == {
        str(shelf["first"].id),
        str(shelf["second"].id),
    }
    assert all(f["status"] == "ready" for f in order["fulfilments"])
    assert await stock_of(session, shelf["chicken"]) == (8, 2, 0)
    assert await stock_of(session, shelf["tea"]) == (4, 1, 0)
    assert "household" not in response.text, "buyers never see supply shares"


async def test_each_line_keeps_the_newest_share_set_already_in_force(
    client, users, shelf, session, world
):
    from datetime import UTC, datetime, timedelta

    from services.catalog import service as catalog

    a, b = shelf["a"], shelf["b"]
    product = await world.product(shelf["first"], title="腊肉", price_fen=5000, stock=5)
    now = datetime.now(UTC)
    await catalog.set_shares(
        session, world.admin, product.id, [catalog.Share(a.id, 6000)], now=now - timedelta(hours=2)
    )
    in_force = await catalog.set_shares(
        session,
        world.admin,
        product.id,
        [catalog.Share(b.id, 3000), catalog.Share(a.id, 3000)],
        now=now - timedelta(hours=1),
    )
    await catalog.set_shares(
        session, world.admin, product.id, [catalog.Share(b.id, 9000)], now=now + timedelta(hours=1)
    )
    buyer = await users.make(Role.buyer)
    response = await client.post(
        "/v1/checkout",
        headers=users.auth(buyer) | key(),
        json=cart((product, 1), (shelf["tea"], 1), (shelf["chicken"], 1)),
    )
    assert response.status_code == 201, response.text
    lines = {
        line.product_id: line
        for line in await session.scalars(
            select(OrderLine).where(OrderLine.order_id == response.json()["id"])
        )
    }
    line = lines[product.id]
    assert line.share_set_id == in_force.set_id
    # Entries in household order, as the snapshot keeps them.
    assert line.shares == [
        {"household_id": str(household), "basis_points": 3000}
        for household in sorted([a.id, b.id], key=str)
    ]
    assert lines[shelf["tea"].id].shares == []
    assert len(lines[shelf["chicken"].id].shares) == 2


async def test_lines_keep_price_fee_and_the_share_snapshot(client, users, shelf, session, world):
    from datetime import date, timedelta

    from services.catalog import service as catalog

    await catalog.certify(
        session,
        world.admin,
        shelf["tea"].id,
        catalog.Certificate("FP-9", "青溪县乡村振兴局", date.today() + timedelta(days=30)),
    )
    buyer = await users.make(Role.buyer)
    response = await client.post(
        "/v1/checkout",
        headers=users.auth(buyer) | key(),
        json=cart((shelf["chicken"], 3), (shelf["tea"], 2)),
    )
    lines = {
        line.product_id: line
        for line in (
            await session.scalars(
                select(OrderLine).where(OrderLine.order_id == response.json()["id"])
            )
        ).all()
    }
    chicken, tea = lines[shelf["chicken"].id], lines[shelf["tea"].id]
    assert (chicken.unit_price_fen, chicken.quantity, chicken.gross_fen) == (16800, 3, 50400)
    assert (chicken.fee_bp, chicken.fee_fen, chicken.certified) == (500, 2520, False)
    assert (tea.fee_bp, tea.fee_fen, tea.certified) == (300, 594, True)
    assert sorted(s["basis_points"] for s in chicken.shares) == [2500, 6000]
    assert {s["household_id"] for s in chicken.shares} == {str(shelf["a"].id), str(shelf["b"].id)}
    assert tea.shares == []


async def test_same_key_same_body_replays_the_first_answer(client, users, shelf, session):
    buyer = await users.make(Role.buyer)
    headers = users.auth(buyer) | key()
    body = cart((shelf["chicken"], 1))
    first = await client.post("/v1/checkout", headers=headers, json=body)
    again = await client.post("/v1/checkout", headers=headers, json=body)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    count = await session.scalar(
        select(func.count()).select_from(Order).where(Order.buyer_id == buyer.id)
    )
    assert count == 1
    assert (await stock_of(session, shelf["chicken"]))[0] == 9


async def test_same_key_with_another_body_is_409(client, users, shelf):
    buyer = await users.make(Role.buyer)
    headers = users.auth(buyer) | key()
    await client.post("/v1/checkout", headers=headers, json=cart((shelf["chicken"], 1)))
    response = await client.post("/v1/checkout", headers=headers, json=cart((shelf["chicken"], 2)))
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/idempotency-key-reused"


async def test_keys_belong_to_their_buyer(client, users, shelf):
    one, two = await users.make(Role.buyer), await users.make(Role.buyer)
    shared = key()
    first = await client.post(
        "/v1/checkout", headers=users.auth(one) | shared, json=cart((shelf["chicken"], 1))
    )
    second = await client.post(
        "/v1/checkout", headers=users.auth(two) | shared, json=cart((shelf["chicken"], 1))
    )
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]


async def test_idempotency_key_is_required(client, users, shelf):
    buyer = await users.make(Role.buyer)
    response = await client.post(
        "/v1/checkout", headers=users.auth(buyer), json=cart((shelf["chicken"], 1))
    )
    assert response.status_code == 422
    assert response.json()["field"] == "Idempotency-Key"


async def test_out_of_stock_is_409_and_reserves_nothing(client, users, shelf, session):
    buyer = await users.make(Role.buyer)
    response = await client.post(
        "/v1/checkout",
        headers=users.auth(buyer) | key(),
        json=cart((shelf["tea"], 1), (shelf["chicken"], 11)),
    )
    assert response.status_code == 409
    body = response.json()
    assert body["type"] == "/problems/out-of-stock"
    assert body["field"] == "lines.1.quantity"
    assert body["available"] == 10
    assert await stock_of(session, shelf["tea"]) == (5, 0, 0), "all or nothing"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lines": []}, "lines"),
        (
            {"lines": [{"product_id": "00000000-0000-0000-0000-000000000000", "quantity": 1}]},
            "lines.0.product_id",
        ),
        ({"payment_method": "bitcoin"}, "payment_method"),
        (
            {"delivery": {"type": "pickup", "site_id": "00000000-0000-0000-0000-000000000000"}},
            "delivery.site_id",
        ),
        ({"delivery": {"type": "drone"}}, "delivery"),
    ],
)
async def test_bad_carts_are_422_naming_the_field(client, users, shelf, change, field):
    buyer = await users.make(Role.buyer)
    body = cart((shelf["chicken"], 1)) | change
    response = await client.post("/v1/checkout", headers=users.auth(buyer) | key(), json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"].startswith(field)


async def test_zero_or_negative_quantity_is_422(client, users, shelf):
    buyer = await users.make(Role.buyer)
    for quantity in (0, -1):
        response = await client.post(
            "/v1/checkout",
            headers=users.auth(buyer) | key(),
            json=cart((shelf["chicken"], quantity)),
        )
        assert response.status_code == 422
        assert response.json()["field"] == "lines.0.quantity"


async def test_pickup_at_a_village_site(client, users, shelf, world):
    site = await world.site()
    buyer = await users.make(Role.buyer)
    response = await client.post(
        "/v1/checkout",
        headers=users.auth(buyer) | key(),
        json=cart((shelf["chicken"], 1), delivery={"type": "pickup", "site_id": str(site.id)}),
    )
    assert response.status_code == 201, response.text
    assert response.json()["delivery"] == {
        "type": "pickup",
        "address": None,
        "site_id": str(site.id),
    }


async def test_without_stripe_keys_card_payment_is_a_clear_problem(client, users, shelf):
    buyer = await users.make(Role.buyer)
    response = await client.post(
        "/v1/checkout",
        headers=users.auth(buyer) | key(),
        json=cart((shelf["chicken"], 1), method="stripe"),
    )
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/stripe-not-configured"
    assert response.json()["field"] == "payment_method"


@pytest.mark.parametrize("role", [Role.manager, Role.officer, Role.admin])
async def test_only_buyers_check_out(client, users, shelf, role):
    caller = await users.make(role)
    response = await client.post(
        "/v1/checkout", headers=users.auth(caller) | key(), json=cart((shelf["chicken"], 1))
    )
    assert response.status_code == 403


async def test_stripe_checkout_answers_a_client_secret_and_holds_stock(
    stripe_client, users, shelf, session, fake_stripe
):
    buyer = await users.make(Role.buyer)
    headers = users.auth(buyer) | key()
    response = await stripe_client.post(
        "/v1/checkout", headers=headers, json=cart((shelf["chicken"], 2), method="stripe")
    )
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "awaiting_payment"
    assert order["client_secret"].startswith("pi_")
    assert order["reserved_until"] is not None
    assert all(f["status"] == "awaiting_payment" for f in order["fulfilments"])
    stored = await session.execute(
        select(Payment.provider_payment_id).where(Payment.order_id == order["id"])
    )
    intent_id = stored.scalar_one()
    assert intent_id, "the intent id reached the database"
    assert order["client_secret"].startswith(intent_id)
    again = await stripe_client.post(
        "/v1/checkout", headers=headers, json=cart((shelf["chicken"], 2), method="stripe")
    )
    assert again.json() == order


async def test_a_stripe_checkout_answers_the_order_as_it_is_stored(
    stripe_client, users, shelf, fake_stripe
):
    """The answer is built from the order as placed, not read back: it must still be the
    order that the database holds, both fulfilments and their lines included."""
    buyer = await users.make(Role.buyer)
    response = await stripe_client.post(
        "/v1/checkout",
        headers=users.auth(buyer) | key(),
        json=cart((shelf["chicken"], 2), (shelf["tea"], 1), method="stripe"),
    )
    assert response.status_code == 201, response.text
    answered = response.json()
    assert answered.pop("client_secret").startswith("pi_")
    stored = await stripe_client.get(f"/v1/orders/{answered['id']}", headers=users.auth(buyer))
    assert stored.status_code == 200, stored.text

    def by_fulfilment(order: dict[str, Any]) -> dict[str, Any]:
        return order | {"fulfilments": sorted(order["fulfilments"], key=lambda f: f["id"])}

    assert len(answered["fulfilments"]) == 2
    assert by_fulfilment(answered) == by_fulfilment(stored.json())


async def test_stripe_down_keeps_the_order_and_a_retry_completes_it(
    stripe_client, users, shelf, session, fake_stripe
):
    buyer = await users.make(Role.buyer)
    headers = users.auth(buyer) | key()
    body = cart((shelf["chicken"], 1), method="stripe")
    # The library tries three times (two retries): all of them fail.
    fake_stripe.state.fail_next(3, status=500, endpoint="POST /v1/payment_intents")
    failed = await stripe_client.post("/v1/checkout", headers=headers, json=body)
    assert failed.status_code == 503, failed.text
    assert failed.json()["type"] == "/problems/payment-provider-unavailable"
    assert failed.headers["retry-after"]
    retried = await stripe_client.post("/v1/checkout", headers=headers, json=body)
    assert retried.status_code == 201, retried.text
    assert retried.json()["id"] == failed.json()["order_id"]
    assert retried.json()["client_secret"]
    orders_made = await session.scalar(
        select(func.count()).select_from(Order).where(Order.buyer_id == buyer.id)
    )
    assert orders_made == 1
    assert (await stock_of(session, shelf["chicken"]))[:2] == (9, 1)


async def test_an_order_cancelled_while_stripe_answers_is_not_payable(
    stripe_app, stripe_client, users, shelf, session, monkeypatch
):
    buyer = await users.make(Role.buyer)
    gateway = stripe_app.state.stripe
    ask_stripe = gateway.create_payment_intent

    async def cancelled_meanwhile(**request: Any) -> Intent:
        # The buyer cancels the placed order (as the reservation sweep or a second tab
        # could) before Stripe's answer comes back; Stripe is still asked, over HTTP.
        order_id = request["metadata"]["order_id"]
        answer = await stripe_client.post(
            f"/v1/orders/{order_id}/cancel", headers=users.auth(buyer)
        )
        assert answer.status_code == 200, answer.text
        return await ask_stripe(**request)

    monkeypatch.setattr(gateway, "create_payment_intent", cancelled_meanwhile)
    response = await stripe_client.post(
        "/v1/checkout",
        headers=users.auth(buyer) | key(),
        json=cart((shelf["chicken"], 2), method="stripe"),
    )
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["type"] == "/problems/order-not-payable"
    assert problem["detail"] == "This order is cancelled already."
    # The intent was not bound: the transaction that would have bound it rolled back.
    payment = (
        await session.execute(
            select(Payment.provider_payment_id, Order.status)
            .join(Order, Order.id == Payment.order_id)
            .where(Order.buyer_id == buyer.id)
            .execution_options(populate_existing=True)
        )
    ).one()
    assert tuple(payment) == (None, OrderStatus.cancelled)
    assert (await stock_of(session, shelf["chicken"]))[:2] == (10, 0)


async def _placed_without_an_intent(
    stripe_client: Any, users: Any, shelf: Any, fake_stripe: Any
) -> tuple[Any, dict[str, str], uuid.UUID]:
    """A Stripe checkout whose PaymentIntent Stripe never made (three 500s): the buyer,
    the Idempotency-Key header sent, and the order, placed and awaiting payment."""
    buyer = await users.make(Role.buyer)
    fake_stripe.state.fail_next(3, status=500, endpoint="POST /v1/payment_intents")
    sent = key()
    failed = await stripe_client.post(
        "/v1/checkout",
        headers=users.auth(buyer) | sent,
        json=cart((shelf["chicken"], 1), method="stripe"),
    )
    assert failed.status_code == 503, failed.text
    return buyer, sent, uuid.UUID(failed.json()["order_id"])


async def test_binding_an_intent_binds_once_keeps_the_answer_and_refuses_another_intent(
    stripe_client, users, shelf, session, fake_stripe
):
    """`bind_intent` binds the placed order's payment once and keeps the key's answer with
    it; another intent, an order no longer awaiting payment or no order writes nothing,
    and the entities' path then names the reason."""
    buyer, sent, order_id = await _placed_without_an_intent(
        stripe_client, users, shelf, fake_stripe
    )
    driver = await driver_connection(session)
    kept = select(IdempotencyKey.response_status, IdempotencyKey.response_body).where(
        IdempotencyKey.owner_id == buyer.id, IdempotencyKey.key == sent["Idempotency-Key"]
    )
    bound = select(Payment.provider_payment_id).where(Payment.order_id == order_id)
    now = datetime.now(UTC)

    async def bind(intent_id: str, order: uuid.UUID = order_id, body: str = '{"n": 1}') -> Any:
        return await payments.bind_intent(
            driver,
            order,
            intent_id,
            owner_id=buyer.id,
            key=sent["Idempotency-Key"],
            status=201,
            body=body,
            now=now,
        )

    assert tuple((await session.execute(kept)).one()) == (None, None)
    assert await bind("pi_first") == payments.Bound(OrderStatus.awaiting_payment, True)
    assert await session.scalar(bound) == "pi_first"
    assert tuple((await session.execute(kept)).one()) == (201, {"n": 1})
    # Again with the same intent (a concurrent retry that bound it first): still bound,
    # and the first answer stays.
    assert await bind("pi_first", body='{"n": 2}') == payments.Bound(
        OrderStatus.awaiting_payment, True
    )
    assert tuple((await session.execute(kept)).one()) == (201, {"n": 1})
    assert await bind("pi_second") == payments.Bound(OrderStatus.awaiting_payment, False)
    second = Intent(
        id="pi_second",
        status="requires_payment_method",
        amount=1,
        currency="CNY",
        client_secret="pi_second_secret_x",
        metadata={},
    )
    with pytest.raises(Conflict) as refused:
        await payments.record_intent(session, order_id, second)
    assert refused.value.extra["reason"] == "intent-mismatch"
    assert await session.scalar(bound) == "pi_first"
    assert await bind("pi_first", order=uuid.uuid4()) == payments.Bound(None, False)


async def test_an_order_no_longer_awaiting_payment_binds_nothing_and_keeps_no_answer(
    stripe_client, users, shelf, session, fake_stripe
):
    buyer, sent, order_id = await _placed_without_an_intent(
        stripe_client, users, shelf, fake_stripe
    )
    cancelled = await stripe_client.post(
        f"/v1/orders/{order_id}/cancel", headers=users.auth(buyer), json={}
    )
    assert cancelled.status_code == 200, cancelled.text

    found = await payments.bind_intent(
        await driver_connection(session),
        order_id,
        "pi_late",
        owner_id=buyer.id,
        key=sent["Idempotency-Key"],
        status=201,
        body="{}",
        now=datetime.now(UTC),
    )

    assert found == payments.Bound(OrderStatus.cancelled, False)
    payment = select(Payment.provider_payment_id).where(Payment.order_id == order_id)
    assert await session.scalar(payment) is None
    kept = select(IdempotencyKey.response_status).where(
        IdempotencyKey.owner_id == buyer.id, IdempotencyKey.key == sent["Idempotency-Key"]
    )
    assert await session.scalar(kept) is None
