"""Races with real concurrent connections on a database of their own (committed data)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from app.main import create_app
from services.catalog import ranking
from services.catalog.models import Product
from services.db import autocommit_driver, create_engine, session_factory
from services.jobs.service import enqueue
from services.orders import flows
from services.orders import service as orders
from services.orders.models import OrderLine, OrderStatus
from services.payments import service as payments
from services.payments.models import StripeEvent
from services.schema import upgrade
from services.users.models import Role, User
from tests.committed import wait_for_a_lock_wait
from tests.conftest import _PASSWORD_HASH, JWT_SECRET, create_database, drop_database
from tests.factories import Builder, build_regions
from tests.fakes.stripe_server import make_event
from tests.orders_helpers import cart, signed


@pytest.fixture(scope="module")
async def live(server_url: str, stripe_settings_module: Any) -> AsyncIterator[dict[str, Any]]:
    name = f"marketplace_race_{uuid.uuid4().hex[:10]}"
    url = await create_database(server_url, name)
    engine = create_engine(url)
    await upgrade(engine)
    settings = stripe_settings_module.model_copy(
        update={"database_url": url, "db_pool_size": 20, "db_max_overflow": 10}
    )
    app = create_app(settings)
    factory = session_factory(app.state.engine)
    async with factory() as session, session.begin():
        admin = User(email="race-admin@example.com", password_hash=_PASSWORD_HASH, role=Role.admin)
        session.add(admin)
        await session.flush()
        world = Builder(session, admin, await build_regions(session))
        coop = await world.cooperative()
        buyers = [
            User(email=f"race-buyer-{i}@example.com", password_hash=_PASSWORD_HASH, role=Role.buyer)
            for i in range(200)
        ]
        session.add_all(buyers)
        await session.flush()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://race") as client:
        yield {
            "app": app,
            "client": client,
            "factory": factory,
            "admin": admin,
            "coop": coop,
            "buyers": buyers,
            "engine": engine,
        }
    await app.state.stripe.aclose()
    await app.state.engine.dispose()
    await engine.dispose()
    await drop_database(server_url, name)


@pytest.fixture(scope="module")
def stripe_settings_module(tmp_path_factory, fake_stripe):
    from app.settings import Settings
    from tests.factories import PII_KEY
    from tests.orders_helpers import WEBHOOK_SECRET

    return Settings(
        database_url="postgresql://unused@localhost/unused",
        jwt_secret=JWT_SECRET,
        pii_key=PII_KEY.decode(),
        data_dir=tmp_path_factory.mktemp("race"),
        log_level="WARNING",
        stripe_secret_key="sk_test_race",
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=fake_stripe.url,
    )


def auth(user: User) -> dict[str, str]:
    from services.users.tokens import issue_token

    token = issue_token(
        user_id=user.id,
        role=user.role.value,
        secret=JWT_SECRET,
        ttl=timedelta(hours=1),
        now=datetime.now(UTC),
    )
    return {"Authorization": f"Bearer {token}"}


async def new_product(live: dict[str, Any], stock: int) -> Product:
    from services.catalog import service as catalog
    from services.catalog.models import ProductStatus

    async with live["factory"]() as session, session.begin():
        return await catalog.create_product(
            session,
            live["admin"],
            live["coop"].id,
            catalog.NewProduct(
                title="核桃",
                category="nuts",
                unit="kg",
                price_fen=2000,
                stock=stock,
                status=ProductStatus.active,
            ),
        )


def succeeded(order: dict[str, Any]) -> dict[str, Any]:
    """Stripe's payment_intent.succeeded for the whole of a Stripe order."""
    return make_event(
        "payment_intent.succeeded",
        {
            "id": order["client_secret"].split("_secret_")[0],
            "object": "payment_intent",
            "amount": order["total_fen"],
            "amount_received": order["total_fen"],
            "currency": "cny",
            "status": "succeeded",
            "metadata": {"order_id": order["id"]},
        },
    )


async def counts(live: dict[str, Any], product: Product) -> tuple[int, int, int, int]:
    """Stock, reserved, sold, and the number of orders holding the product."""
    async with live["factory"]() as session:
        row = (
            await session.execute(
                select(Product.stock, Product.reserved, Product.sold_count).where(
                    Product.id == product.id
                )
            )
        ).one()
        orders = await session.scalar(
            select(func.count(func.distinct(OrderLine.order_id))).where(
                OrderLine.product_id == product.id
            )
        )
    return row.stock, row.reserved, row.sold_count, int(orders or 0)


async def test_200_concurrent_checkouts_of_50_in_stock_make_exactly_50_orders(live):
    product = await new_product(live, stock=50)
    client = live["client"]
    answers = await asyncio.gather(
        *[
            client.post(
                "/v1/checkout",
                headers=auth(buyer) | {"Idempotency-Key": uuid.uuid4().hex},
                json=cart((product, 1)),
            )
            for buyer in live["buyers"]
        ]
    )
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {201: 50, 409: 150}, statuses
    assert all(
        a.json()["type"] == "/problems/out-of-stock" for a in answers if a.status_code == 409
    )
    assert await counts(live, product) == (0, 50, 0, 50)


async def test_carts_crossing_each_other_take_products_in_id_order_and_never_deadlock(live):
    # The lower product is held; cart X (lower first) waits for it, then cart Y (higher
    # first). Taking products in cart order, Y would hold the higher one while waiting,
    # and X, once given the lower one, would wait for Y's: a deadlock, one aborted. In
    # id order Y waits for the lower one holding nothing, and both go through.
    low, high = sorted(
        [await new_product(live, stock=10) for _ in range(2)], key=lambda p: str(p.id)
    )
    x, y = live["buyers"][60:62]

    def checkout(buyer: User, lines: dict[str, Any]) -> asyncio.Task[httpx.Response]:
        headers = auth(buyer) | {"Idempotency-Key": uuid.uuid4().hex}
        return asyncio.create_task(live["client"].post("/v1/checkout", headers=headers, json=lines))

    async with live["factory"]() as session, session.begin():
        await session.execute(select(Product.id).where(Product.id == low.id).with_for_update())
        crossing = [checkout(x, cart((low, 1), (high, 1)))]
        await wait_for_a_lock_wait(live["factory"], "cart X never waited for the product")
        crossing.append(checkout(y, cart((high, 2), (low, 2))))
        await wait_for_a_lock_wait(
            live["factory"], "cart Y never waited for the product", waiting=2
        )
    answers = await asyncio.gather(*crossing)
    assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
    assert await counts(live, low) == (7, 3, 0, 2)
    assert await counts(live, high) == (7, 3, 0, 2)


async def test_20_concurrent_retries_with_one_key_make_one_order(live):
    product = await new_product(live, stock=100)
    buyer = live["buyers"][0]
    headers = auth(buyer) | {"Idempotency-Key": uuid.uuid4().hex}
    answers = await asyncio.gather(
        *[
            live["client"].post("/v1/checkout", headers=headers, json=cart((product, 3)))
            for _ in range(20)
        ]
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert await counts(live, product) == (97, 3, 0, 1)


async def test_20_concurrent_stripe_retries_make_one_order_and_one_intent(live, fake_stripe):
    product = await new_product(live, stock=100)
    buyer = live["buyers"][1]
    headers = auth(buyer) | {"Idempotency-Key": uuid.uuid4().hex}
    answers = await asyncio.gather(
        *[
            live["client"].post(
                "/v1/checkout", headers=headers, json=cart((product, 2), method="stripe")
            )
            for _ in range(20)
        ]
    )
    ok = [a for a in answers if a.status_code == 201]
    assert ok, [a.text for a in answers]
    assert len({a.json()["id"] for a in ok}) == 1
    assert len({a.json()["client_secret"] for a in ok}) == 1
    assert await counts(live, product) == (98, 2, 0, 1)


async def test_the_same_webhook_ten_times_at_once_has_one_effect(live):
    product = await new_product(live, stock=10)
    buyer = live["buyers"][2]
    placed = await live["client"].post(
        "/v1/checkout",
        headers=auth(buyer) | {"Idempotency-Key": uuid.uuid4().hex},
        json=cart((product, 4), method="stripe"),
    )
    order = placed.json()
    event = succeeded(order)
    payload, headers = signed(event)
    answers = await asyncio.gather(
        *[
            live["client"].post("/v1/webhooks/stripe", content=payload, headers=headers)
            for _ in range(10)
        ]
    )
    assert {a.status_code for a in answers} == {200}
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 9
    assert await counts(live, product) == (6, 0, 4, 1)
    async with live["factory"]() as session:
        stored = await session.scalar(
            select(func.count()).select_from(StripeEvent).where(StripeEvent.id == event["id"])
        )
    assert stored == 1


async def test_expiry_run_twice_at_once_returns_stock_exactly_once(live):
    product = await new_product(live, stock=10)
    for buyer in live["buyers"][3:6]:
        placed = await live["client"].post(
            "/v1/checkout",
            headers=auth(buyer) | {"Idempotency-Key": uuid.uuid4().hex},
            json=cart((product, 2), method="stripe"),
        )
        assert placed.status_code == 201
    assert await counts(live, product) == (4, 6, 0, 3)
    later = datetime.now(UTC) + timedelta(hours=1)

    async def sweep() -> int:
        async with live["factory"]() as session, session.begin():
            return await flows.expire_due(session, now=later, enqueue=enqueue)

    swept = await asyncio.gather(sweep(), sweep(), sweep())
    assert sum(swept) >= 3
    assert await counts(live, product) == (10, 0, 0, 3)


async def stripe_order(live: dict[str, Any], buyer: User, product: Product, qty: int) -> Any:
    placed = await live["client"].post(
        "/v1/checkout",
        headers=auth(buyer) | {"Idempotency-Key": uuid.uuid4().hex},
        json=cart((product, qty), method="stripe"),
    )
    assert placed.status_code == 201, placed.text
    return placed.json()


@asynccontextmanager
async def webhook_behind_the_orders_lock(
    live: dict[str, Any], order: dict[str, Any], event: dict[str, Any]
) -> AsyncIterator[tuple[Any, asyncio.Task[httpx.Response]]]:
    """Lock the order as a cancel or a refund does, send the event, and yield the locking
    session once the webhook waits for a lock; the webhook's answer comes after the exit."""
    payload, headers = signed(event)
    async with live["factory"]() as session, session.begin():
        # A wait for the payment ends the test (lock_timeout) rather than the deadlock
        # detector choosing which of the two to abort.
        await session.execute(
            text(
                "SELECT set_config('lock_timeout', '5s', true),"
                " set_config('deadlock_timeout', '10s', true)"
            )
        )
        await orders.lock_order(session, uuid.UUID(order["id"]))
        webhook = asyncio.create_task(
            live["client"].post("/v1/webhooks/stripe", content=payload, headers=headers)
        )
        await wait_for_a_lock_wait(live["factory"], "the webhook never waited for the order's lock")
        yield session, webhook


async def test_a_payment_reported_while_the_buyer_cancels_waits_for_the_order_then_is_refunded(
    live,
):
    # The cancel locks the order, then the payment; the webhook must wait for the
    # order before touching the payment, or the two deadlock.
    product = await new_product(live, stock=5)
    buyer = live["buyers"][6]
    order = await stripe_order(live, buyer, product, 2)
    async with webhook_behind_the_orders_lock(live, order, succeeded(order)) as (session, webhook):
        cancelled, _ = await flows.cancel_by_buyer(
            session, buyer, uuid.UUID(order["id"]), now=datetime.now(UTC), enqueue=enqueue
        )
        assert cancelled.status.value == "cancelled"
    answer = await webhook
    assert answer.status_code == 200
    assert answer.json()["outcome"] == "late-payment-refunded"
    assert await counts(live, product) == (5, 0, 0, 1)


async def test_binding_an_intent_waits_for_the_order_before_it_locks_the_payment(live):
    """`bind_intent` keeps the order-first lock order of every other path: while another
    transaction holds the order, the binding waits without holding the payment."""
    product = await new_product(live, stock=5)
    order = await stripe_order(live, live["buyers"][8], product, 1)
    order_id = uuid.UUID(order["id"])
    intent_id = order["client_secret"].split("_secret_")[0]

    async def bind() -> OrderStatus | None:
        async with autocommit_driver(live["factory"]) as driver:
            found = await payments.bind_intent(
                driver,
                order_id,
                intent_id,
                owner_id=uuid.uuid4(),
                key="no such key",
                status=201,
                body="{}",
                now=datetime.now(UTC),
            )
        return found.status

    async with live["factory"]() as holder, holder.begin():
        await holder.execute(text("SELECT set_config('lock_timeout', '5s', true)"))
        await orders.lock_order(holder, order_id)
        binding = asyncio.create_task(bind())
        await wait_for_a_lock_wait(live["factory"], "the binding never waited for the order")
        # Had the binding locked the payment first, this would fail at once.
        await holder.execute(
            text("SELECT 1 FROM payments WHERE order_id = :order FOR UPDATE NOWAIT"),
            {"order": order_id},
        )
    assert await binding is OrderStatus.awaiting_payment


async def test_a_payment_takes_its_products_in_id_order_as_checkout_does(live):
    """The sale a succeeded payment records locks the order's products lowest id first,
    as checkout reserves them: while another transaction holds the lower product, the
    webhook waits for it without holding the higher one (held in the other order, the two
    would deadlock)."""
    low, high = sorted([await new_product(live, 5), await new_product(live, 5)], key=lambda p: p.id)
    placed = await live["client"].post(
        "/v1/checkout",
        headers=auth(live["buyers"][9]) | {"Idempotency-Key": uuid.uuid4().hex},
        # The cart names the higher product first.
        json=cart((high, 1), (low, 2), method="stripe"),
    )
    assert placed.status_code == 201, placed.text
    order = placed.json()
    payload, headers = signed(succeeded(order))
    async with live["factory"]() as holder, holder.begin():
        await holder.execute(text("SELECT set_config('lock_timeout', '5s', true)"))
        await holder.execute(
            text("SELECT 1 FROM products WHERE id = :id FOR NO KEY UPDATE"), {"id": low.id}
        )
        webhook = asyncio.create_task(
            live["client"].post("/v1/webhooks/stripe", content=payload, headers=headers)
        )
        await wait_for_a_lock_wait(live["factory"], "the payment never waited for the product")
        # Had the payment taken the higher product first, this would fail at once.
        await holder.execute(
            text("SELECT 1 FROM products WHERE id = :id FOR NO KEY UPDATE NOWAIT"),
            {"id": high.id},
        )
    answer = await webhook
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "order-confirmed"
    assert await counts(live, low) == (3, 0, 2, 1)
    assert await counts(live, high) == (4, 0, 1, 1)


async def test_a_dispute_reported_while_a_manager_refunds_waits_for_the_order(live):
    product = await new_product(live, stock=5)
    order = await stripe_order(live, live["buyers"][7], product, 1)
    payload, headers = signed(succeeded(order))
    paid = await live["client"].post("/v1/webhooks/stripe", content=payload, headers=headers)
    assert paid.json()["outcome"] == "order-confirmed"
    dispute = make_event(
        "charge.dispute.created",
        {
            "id": f"dp_{uuid.uuid4().hex[:14]}",
            "object": "dispute",
            "amount": order["total_fen"],
            "charge": f"ch_{uuid.uuid4().hex[:14]}",
            "payment_intent": order["client_secret"].split("_secret_")[0],
            "reason": "fraudulent",
            "status": "needs_response",
        },
    )
    async with webhook_behind_the_orders_lock(live, order, dispute) as (session, webhook):
        # A refund takes the order, then the payment: free while the webhook waits.
        await payments.payment_of(session, uuid.UUID(order["id"]), lock=True)
    answer = await webhook
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "settlement-held"


async def test_ranking_passes_at_once_share_the_work_and_skip_rows_an_order_holds(live):
    factory = live["factory"]

    async def rank(session: Any, batch: int = ranking.RANK_BATCH) -> int:
        # A pass that waited for a lock would fail here instead of hanging the test.
        await session.execute(text("SET LOCAL lock_timeout = '5s'"))
        return await ranking.rank_best_selling(session, batch=batch)

    async with factory() as session, session.begin():
        while await rank(session):
            pass  # what the module's other tests sold
    products = [await new_product(live, stock=10) for _ in range(5)]
    async with factory() as session, session.begin():
        for sold, product in enumerate(products, start=1):
            await session.execute(
                text("UPDATE products SET sold_count = :sold WHERE id = :id"),
                {"sold": sold, "id": product.id},
            )
    held = products[0]
    async with factory() as order, order.begin():
        # An order's transaction holds one product's row, as checkout does.
        await order.execute(select(Product.id).where(Product.id == held.id).with_for_update())
        async with factory() as first, first.begin(), factory() as second, second.begin():
            assert await rank(first, batch=2) == 2
            assert await rank(second) == 2
    async with factory() as session, session.begin():
        assert await rank(session) == 1
        ranked = dict(
            (
                await session.execute(
                    select(Product.id, Product.ranked_sold_count).where(
                        Product.id.in_([p.id for p in products])
                    )
                )
            ).all()
        )
    assert ranked == {p.id: sold for sold, p in enumerate(products, start=1)}
