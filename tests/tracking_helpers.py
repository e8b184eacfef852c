"""Shared setup for shipment and tracking tests: a paid-or-COD order ready to ship."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from app.settings import Settings
from services.cooperatives.models import Cooperative
from services.users.models import Role, User
from tests.factories import Builder
from tests.orders_helpers import cart, key

AFTERSHIP_SECRET = "aftership-webhook-secret"
KUAIDI100_SALT = "kuaidi100-salt"


def with_providers(settings: Settings, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "aftership_webhook_secret": AFTERSHIP_SECRET,
            "kuaidi100_salt": KUAIDI100_SALT,
            **extra,
        }
    )


@dataclass
class Parcelled:
    """A cash-on-delivery order of one cooperative's goods, and who acts on it."""

    order: dict[str, Any]
    buyer: User
    manager: User
    cooperative: Cooperative
    fulfilment_id: str
    product: Any


async def cod_order(
    client: httpx.AsyncClient,
    users: Any,
    world: Builder,
    *,
    quantity: int = 2,
    delivery: dict[str, Any] | None = None,
    cooperative: Cooperative | None = None,
    extra_lines: list[tuple[Any, int]] | None = None,
) -> Parcelled:
    coop = cooperative or await world.cooperative()
    product = await world.product(coop, price_fen=2500, stock=20)
    buyer = await users.make(Role.buyer)
    manager = await users.make(Role.manager, cooperative_id=coop.id)
    response = await client.post(
        "/v1/checkout",
        json=cart((product, quantity), *(extra_lines or []), delivery=delivery),
        headers={**users.auth(buyer), **key()},
    )
    assert response.status_code == 201, response.text
    order = response.json()
    fulfilment = next(f for f in order["fulfilments"] if f["cooperative_id"] == str(coop.id))
    return Parcelled(order, buyer, manager, coop, fulfilment["id"], product)


async def ship(
    client: httpx.AsyncClient,
    users: Any,
    parcelled: Parcelled,
    number: str = "SF1234567890123",
    *,
    carrier: str = "sf",
    provider: str = "aftership",
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/fulfilments/{parcelled.fulfilment_id}/shipments",
        json={"carrier": carrier, "tracking_number": number, "provider": provider},
        headers=users.auth(parcelled.manager),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
