"""Checkout's fast path: a quote read without locks, then one statement that claims the key,
reserves the stock only as quoted and writes the order; anything else writes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from services.catalog import service as catalog
from services.catalog.models import Product
from services.db import driver_connection
from services.idempotency.models import IdempotencyKey
from services.orders.checkout import (
    Cart,
    CartLine,
    Delivery,
    FeePolicy,
    KeyClaim,
    build_order,
    place_quoted,
)
from services.orders.models import DeliveryType, Order, OrderLine, PaymentMethod
from services.users.models import Role
from tests.orders_helpers import ADDRESS, shelf_with_shares


@pytest.fixture
async def shelf(world) -> dict[str, Any]:
    return await shelf_with_shares(world)


def _cart(*lines: tuple[Any, int]) -> Cart:
    return Cart(
        [CartLine(product.id, quantity) for product, quantity in lines],
        Delivery(DeliveryType.home, ADDRESS),
        PaymentMethod.cod,
    )


async def _quoted(session, buyer, cart: Cart, now: datetime):
    """The quote of a cart and the order built from it, as the fast path makes them."""
    driver = await driver_connection(session)
    wanted = [(line.product_id, line.quantity) for line in cart.lines]
    quote = await catalog.quote(driver, wanted, today=now.date(), shares_at=now)
    assert quote is not None
    prepared = build_order(
        buyer, cart, wanted, quote.reserved, fees=FeePolicy(), now=now, reservation=timedelta(0)
    )
    return driver, quote, prepared


def _claim(buyer, now: datetime, name: str | None = None) -> KeyClaim:
    return KeyClaim(buyer.id, name or uuid.uuid4().hex, "checkout", "0" * 64, now, 201, "{}")


async def _state(session, product) -> tuple[int, int, int, int]:
    """Stock and reserved units of a product, orders and keys in all."""
    stock, reserved = (
        await session.execute(
            select(Product.stock, Product.reserved).where(Product.id == product.id)
        )
    ).one()
    orders = await session.scalar(select(func.count()).select_from(Order))
    keys = await session.scalar(select(func.count()).select_from(IdempotencyKey))
    return stock, reserved, orders, keys


async def test_a_quoted_order_is_placed_with_its_key_in_one_statement(users, shelf, session):
    buyer = await users.make(Role.buyer)
    now = datetime.now(UTC)
    driver, quote, prepared = await _quoted(
        session, buyer, _cart((shelf["chicken"], 2), (shelf["tea"], 1)), now
    )
    claim = _claim(buyer, now)
    assert await place_quoted(driver, prepared, quote, key=claim)
    assert await _state(session, shelf["chicken"]) == (8, 2, 1, 1)
    lines = (
        await session.scalars(
            select(OrderLine)
            .where(OrderLine.order_id == prepared.view.order.id)
            .order_by(OrderLine.position)
        )
    ).all()
    assert [(line.product_id, line.quantity, line.unit_price_fen) for line in lines] == [
        (shelf["chicken"].id, 2, 16800),
        (shelf["tea"].id, 1, 9900),
    ]
    assert {s["household_id"] for s in lines[0].shares} == {
        str(shelf["a"].id),
        str(shelf["b"].id),
    }
    kept = await session.get(IdempotencyKey, (buyer.id, claim.key))
    assert kept is not None
    assert (kept.resource_id, kept.response_status, kept.response_body) == (
        prepared.view.order.id,
        201,
        {},
    )


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"price_fen": 17800}, id="price"),
        pytest.param({"title": "河田土鸡"}, id="title"),
        pytest.param({"certificate_number": "GAP-2026-01"}, id="certificate"),
        pytest.param({"stock": 1}, id="stock-short"),
        pytest.param({"status": "archived"}, id="not-for-sale"),
    ],
)
async def test_a_product_changed_after_its_quote_is_not_reserved_and_nothing_is_written(
    users, shelf, session, change
):
    buyer = await users.make(Role.buyer)
    now = datetime.now(UTC)
    driver, quote, prepared = await _quoted(
        session, buyer, _cart((shelf["tea"], 1), (shelf["chicken"], 2)), now
    )
    await session.execute(update(Product).where(Product.id == shelf["chicken"].id).values(change))
    before = await _state(session, shelf["tea"])
    assert not await place_quoted(driver, prepared, quote, key=_claim(buyer, now))
    # The tea was taken before the chicken failed its check: the statement undid it too.
    assert await _state(session, shelf["tea"]) == before


async def test_a_share_set_that_took_effect_after_the_quote_is_not_reserved_against(
    users, shelf, session, world
):
    buyer = await users.make(Role.buyer)
    now = datetime.now(UTC)
    driver, quote, prepared = await _quoted(session, buyer, _cart((shelf["chicken"], 1)), now)
    await catalog.set_shares(
        session,
        world.admin,
        shelf["chicken"].id,
        [catalog.Share(shelf["a"].id, 9000)],
        now=now - timedelta(milliseconds=1),
    )
    before = await _state(session, shelf["chicken"])
    assert not await place_quoted(driver, prepared, quote, key=_claim(buyer, now))
    assert await _state(session, shelf["chicken"]) == before


async def test_a_key_in_use_makes_the_quoted_statement_write_nothing(users, shelf, session):
    buyer = await users.make(Role.buyer)
    now = datetime.now(UTC)
    driver, quote, prepared = await _quoted(session, buyer, _cart((shelf["chicken"], 1)), now)
    assert await place_quoted(driver, prepared, quote, key=_claim(buyer, now, "used"))
    before = await _state(session, shelf["chicken"])
    driver, quote, again = await _quoted(session, buyer, _cart((shelf["chicken"], 1)), now)
    assert not await place_quoted(driver, again, quote, key=_claim(buyer, now, "used"))
    assert await _state(session, shelf["chicken"]) == before


async def test_an_expired_key_is_taken_over_by_the_quoted_statement(users, shelf, session):
    buyer = await users.make(Role.buyer)
    now = datetime.now(UTC)
    session.add(
        IdempotencyKey(
            owner_id=buyer.id,
            key="old",
            scope="checkout",
            request_hash="1" * 64,
            response_status=201,
            response_body={},
            created_at=now - timedelta(hours=25),
        )
    )
    await session.flush()
    driver, quote, again = await _quoted(session, buyer, _cart((shelf["chicken"], 1)), now)
    assert await place_quoted(driver, again, quote, key=_claim(buyer, now, "old"))
    kept = await session.get(IdempotencyKey, (buyer.id, "old"), populate_existing=True)
    assert kept is not None
    assert (kept.resource_id, kept.request_hash) == (again.view.order.id, "0" * 64)
