"""Setup for ledger tests: orders carried through delivery and payment, then recognised."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from services.catalog import service as catalog
from services.cooperatives.models import Cooperative
from services.households.models import Household
from services.ledger import service as ledger
from services.users.models import Role, User
from tests.factories import Builder
from tests.orders_helpers import cart, key


async def supplied_product(
    world: Builder,
    cooperative: Cooperative,
    shares: list[tuple[Household, int]],
    *,
    price_fen: int = 2500,
    stock: int = 100,
) -> Any:
    """An active product of `cooperative` supplied by member households in the given shares."""
    product = await world.product(cooperative, price_fen=price_fen, stock=stock)
    for household, _ in shares:
        await world.member(cooperative, household)
    if shares:
        await catalog.set_shares(
            world.session,
            world.admin,
            product.id,
            [catalog.Share(h.id, bp) for h, bp in shares],
            now=datetime.now(UTC) - timedelta(seconds=1),
        )
    return product


async def delivered_cod_order(
    client: httpx.AsyncClient,
    users: Any,
    lines: list[tuple[Any, int]],
    *,
    buyer: User | None = None,
    delivery: dict[str, Any] | None = None,
    cash: bool = True,
    number: str | None = None,
) -> dict[str, Any]:
    """A cash-on-delivery order of one cooperative's products: shipped, delivered by hand
    and (with `cash`) paid in cash. Answers the order as the buyer reads it afterwards."""
    buyer = buyer or await users.make(Role.buyer)
    response = await client.post(
        "/v1/checkout",
        json=cart(*lines, delivery=delivery),
        headers={**users.auth(buyer), **key()},
    )
    assert response.status_code == 201, response.text
    order = response.json()
    for fulfilment in order["fulfilments"]:
        manager = await users.make(
            Role.manager, cooperative_id=uuid.UUID(fulfilment["cooperative_id"])
        )
        shipment = await client.post(
            f"/v1/fulfilments/{fulfilment['id']}/shipments",
            json={
                "carrier": "sf",
                "tracking_number": number or f"SF{uuid.uuid4().int % 10**13:013d}",
                "provider": "manual",
            },
            headers=users.auth(manager),
        )
        assert shipment.status_code == 201, shipment.text
        delivered = await client.post(
            f"/v1/shipments/{shipment.json()['id']}/events",
            json={"kind": "delivered"},
            headers=users.auth(manager),
        )
        assert delivered.status_code == 201, delivered.text
        if cash:
            paid = await client.post(
                f"/v1/shipments/{shipment.json()['id']}/events",
                json={"kind": "cash_collected", "amount_fen": order["total_fen"]},
                headers=users.auth(manager),
            )
            assert paid.status_code == 201, paid.text
            cash = False  # the whole order's cash is collected once
    shown = await client.get(f"/v1/orders/{order['id']}", headers=users.auth(buyer))
    body: dict[str, Any] = shown.json()
    body["buyer"] = buyer
    return body


async def recognise(session: AsyncSession, order: dict[str, Any]) -> int:
    """Recognise the order's fulfilments as their outbox jobs would, without taking other
    due fulfilments along (each test says which orders it recognises)."""
    lines = 0
    for fulfilment in order["fulfilments"]:
        lines += await ledger.recognise_delivered(
            session, uuid.UUID(fulfilment["id"]), now=datetime.now(UTC), sweep=0
        )
    return lines
