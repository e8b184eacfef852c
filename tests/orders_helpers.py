"""Shared setup for checkout, payment and refund tests."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.catalog import service as catalog
from tests.factories import Builder

ADDRESS = {
    "recipient": "张丽",
    "phone": "13800001111",
    "province": "示范省",
    "city": "示范市",
    "county": "青溪县",
    "street": "河田镇上坪村 3 组 12 号",
}
WEBHOOK_SECRET = "whsec_test_secret"


def cart(
    *lines: tuple[Any, int], method: str = "cod", delivery: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "lines": [{"product_id": str(p.id), "quantity": q} for p, q in lines],
        "delivery": delivery or {"type": "home", "address": ADDRESS},
        "payment_method": method,
    }


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def shelf_with_shares(world: Builder) -> dict[str, Any]:
    """Two cooperatives; the first's product has two supplying households."""
    first, second = await world.cooperative(), await world.cooperative()
    a, b = await world.household(), await world.household()
    for household in (a, b):
        await world.member(first, household)
    chicken = await world.product(first, title="河田鸡", price_fen=16800, stock=10)
    tea = await world.product(second, title="高山云雾茶", price_fen=9900, stock=5)
    await catalog.set_shares(
        world.session,
        world.admin,
        chicken.id,
        [catalog.Share(a.id, 6000), catalog.Share(b.id, 2500)],
        now=datetime.now(UTC) - timedelta(seconds=1),
    )
    return {"first": first, "second": second, "a": a, "b": b, "chicken": chicken, "tea": tea}


def signed(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    from tests.fakes.stripe_server import sign

    payload = json.dumps(event).encode()
    return payload, {
        "Stripe-Signature": sign(payload, WEBHOOK_SECRET),
        "Content-Type": "application/json",
    }
