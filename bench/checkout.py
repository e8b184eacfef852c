"""The checkout and payment scenarios: orders through POST /v1/checkout, Stripe webhooks.

Buyers are the generated accounts; their access tokens are signed here with the
server's JWT secret rather than obtained from POST /v1/auth/token, whose argon2
check is slow on purpose and is not what these scenarios measure. Carts draw
1 to 3 of the products stocked for checkout (`bench/datagen.py`), 1 or 2 units
each, delivered home, with a fresh Idempotency-Key every time.

Stripe is the fake of the test suite (`tests.fakes.stripe_server`), served over
real HTTP from a thread of the bench process, so the server's real Stripe client
(stripe-python over httpx, retries, timeouts) does the talking. Webhook events
are `payment_intent.succeeded` snapshots of the fake's own intents (the buyer
paid: the fake confirmed the intent), signed with the endpoint secret by
Stripe's scheme at the moment they are sent, as Stripe signs each delivery.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench import cpu, datagen, load
from bench.db import connect, sessions_opened
from services.users.tokens import issue_token
from tests.fakes.stripe_server import FakeStripe, make_event, sign

GROUPS = ("catalogue", "orders", "webhooks")
ORDER_TARGET_PER_S = 400
WEBHOOK_TARGET_PER_S = 1_500
# The fake's, for this run only: nothing real is reached with them.
STRIPE_SECRET_KEY = "sk_test_bench"  # noqa: S105
STRIPE_WEBHOOK_SECRET = "whsec_bench"  # noqa: S105
CHECKOUT_PATH = "/v1/checkout"
WEBHOOK_PATH = "/v1/webhooks/stripe"
TOKEN_TTL = timedelta(hours=12)  # longer than any bounded run
# Webhook warm-up: at most this many events (each needs an order of its own).
WEBHOOK_WARMUP_EVENTS = 1_000
# Events prepared for a measured webhook run beyond the warm-up's rate × duration,
# so that a run ends by its duration rather than by running out of orders.
WEBHOOK_SPARE = 1.25
# Making orders to pay (unmeasured) stops after this long whatever is still missing.
FILL_LIMIT_S = 300.0
Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Shoppers:
    """What carts are made of: a token and a home address per buyer, and the products."""

    authorizations: list[str]
    deliveries: list[dict[str, Any]]
    product_ids: list[str]


@dataclass(frozen=True, slots=True)
class StripeOrder:
    """An order awaiting payment, and its PaymentIntent (from the client secret)."""

    order_id: str
    intent_id: str


@dataclass(frozen=True, slots=True)
class Delivery:
    event_id: str
    order_id: str
    payload: bytes  # the event as Stripe posts it; the signature is made when it is sent


@dataclass(frozen=True, slots=True)
class LoadSettings:
    clients: list[int]
    duration_s: float
    warmup_s: float
    max_requests: int
    engine: str
    webhook_events: int  # per measured webhook run; 0: as many as the duration needs
    seed: int
    roots: cpu.Roots | None = None  # whose CPU a measured run reports


@dataclass(slots=True)
class _Tally:
    """What the scenarios did to the database, to compare with what it holds afterwards."""

    cod_orders: int = 0
    stripe_orders: int = 0
    confirmed_by_webhook: int = 0
    filled: int = 0
    fill_errors: int = 0
    events_prepared: list[int] = field(default_factory=list)


def stripe_settings(api_base: str) -> dict[str, str]:
    """The server's Stripe configuration: the fake's address and this run's secrets."""
    return {
        "MARKETPLACE_STRIPE_SECRET_KEY": STRIPE_SECRET_KEY,
        "MARKETPLACE_STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
        "MARKETPLACE_STRIPE_API_BASE": api_base,
    }


def fake_stripe() -> FakeStripe:
    # Only this run's key; no event log and a short request log, so that tens of
    # thousands of intents do not grow more than the intents themselves.
    return FakeStripe(api_keys={STRIPE_SECRET_KEY}, record_events=False, keep_requests=1_000)


async def load_shoppers(url: str, jwt_secret: str, products: int) -> Shoppers:
    conn = await connect(url)
    try:
        buyers = await conn.fetch(
            "SELECT id, display_name, phone FROM users "
            "WHERE role = 'buyer' AND is_active ORDER BY email"
        )
        villages = await conn.fetch(
            """
            SELECT v.code, v.name AS village, t.name AS township, c.name AS county
            FROM regions v
            JOIN regions t ON t.code = v.parent_code
            JOIN regions c ON c.code = t.parent_code
            WHERE v.level = 'village' ORDER BY v.code
            """
        )
        product_ids = await datagen.checkout_product_ids(conn, products)
    finally:
        await conn.close()
    if not buyers or not product_ids or not villages:
        raise RuntimeError("the database holds no buyers, no checkout products or no villages")
    now = datetime.now(UTC)
    authorizations = []
    deliveries = []
    for index, buyer in enumerate(buyers):
        token = issue_token(
            user_id=buyer["id"], role="buyer", secret=jwt_secret, ttl=TOKEN_TTL, now=now
        )
        authorizations.append(f"Bearer {token}")
        place = villages[index % len(villages)]
        deliveries.append(
            {
                "type": "home",
                "address": {
                    "recipient": buyer["display_name"],
                    "phone": buyer["phone"],
                    "province": "虚构省",
                    "city": "虚构省示范市",
                    "county": place["county"],
                    # Village names end in 村 already.
                    "street": f"{place['township']}{place['village']} {index % 9 + 1} 组 "
                    f"{index % 97 + 1} 号",
                    "region_code": place["code"].strip(),
                },
            }
        )
    return Shoppers(authorizations, deliveries, [str(p) for p in product_ids])


class CheckoutSource:
    """Random carts of random buyers, each with a fresh Idempotency-Key."""

    def __init__(
        self, base_url: str, shoppers: Shoppers, payment_method: str, rng: random.Random
    ) -> None:
        self.base_url = base_url
        self.shoppers = shoppers
        self.payment_method = payment_method
        self.rng = rng

    def __call__(self) -> load.Call:
        rng, shoppers = self.rng, self.shoppers
        buyer = rng.randrange(len(shoppers.authorizations))
        products = rng.sample(
            shoppers.product_ids, min(rng.randint(1, 3), len(shoppers.product_ids))
        )
        body = {
            "lines": [{"product_id": p, "quantity": rng.randint(1, 2)} for p in products],
            "delivery": shoppers.deliveries[buyer],
            "payment_method": self.payment_method,
        }
        headers = (
            ("Authorization", shoppers.authorizations[buyer]),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", str(uuid.uuid4())),
        )
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        return load.make_call(self.base_url, "POST", CHECKOUT_PATH, headers=headers, body=payload)


def checkout_check(payment_method: str, collect: list[StripeOrder] | None) -> load.Check:
    """A placed order in the state its payment method gives it; Stripe orders are kept."""
    wanted = "confirmed" if payment_method == "cod" else "awaiting_payment"

    def check(call: load.Call, body: bytes) -> str | None:
        data = _json(body)
        if data is None:
            return "unreadable body"
        if data.get("status") != wanted:
            return f"order status {data.get('status')}"
        if collect is not None:
            intent, found, _ = str(data.get("client_secret")).partition("_secret_")
            if not found or not intent.startswith("pi_"):
                return "no client_secret"
            collect.append(StripeOrder(str(data["id"]), intent))
        return None

    return check


class WebhookSource:
    """Each delivery once (first deliveries), or all of them round and round (duplicates)."""

    def __init__(self, base_url: str, deliveries: list[Delivery], *, repeat: bool) -> None:
        if not deliveries:
            raise ValueError("no webhook deliveries to send")
        self.base_url = base_url
        self.deliveries = deliveries
        self.repeat = repeat
        self.position = 0

    def __call__(self) -> load.Call | None:
        if not self.repeat and self.position >= len(self.deliveries):
            return None
        delivery = self.deliveries[self.position % len(self.deliveries)]
        self.position += 1
        return webhook_call(self.base_url, delivery)


def webhook_call(base_url: str, delivery: Delivery) -> load.Call:
    headers = (
        ("Content-Type", "application/json; charset=utf-8"),
        # Signed now: Stripe signs every delivery afresh, and the server refuses
        # signatures older than its tolerance (300 s), which a long run outlasts.
        ("Stripe-Signature", sign(delivery.payload, STRIPE_WEBHOOK_SECRET)),
    )
    return load.make_call(
        base_url, "POST", WEBHOOK_PATH, headers=headers, body=delivery.payload, tag=delivery
    )


def webhook_check(*, duplicate: bool, delivered: list[Delivery] | None = None) -> load.Check:
    """The event applied ("order-confirmed"), or recognised as seen before."""
    outcome = "duplicate" if duplicate else "order-confirmed"

    def check(call: load.Call, body: bytes) -> str | None:
        data = _json(body)
        if data is None:
            return "unreadable body"
        if data.get("duplicate") is not duplicate or data.get("outcome") != outcome:
            return f"outcome {data.get('outcome')}"
        if delivered is not None:
            delivered.append(call.tag)
        return None

    return check


def deliveries_for(fake: FakeStripe, orders: list[StripeOrder]) -> list[Delivery]:
    """The buyer pays each order: its intent succeeds in the fake, which makes the event."""
    out = []
    for order in orders:
        intent = fake.confirm(order.intent_id)
        event = make_event("payment_intent.succeeded", intent)
        payload = json.dumps(event, separators=(",", ":")).encode()
        out.append(Delivery(event["id"], order.order_id, payload))
    return out


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def _send_once(base_url: str, call: load.Call) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        return await client.request(
            call.method, call.path, headers=dict(call.headers), content=call.body
        )


class Orders:
    """Runs the orders and webhooks groups against one server and one fake Stripe."""

    def __init__(
        self,
        url: str,
        base_url: str,
        fake: FakeStripe,
        shoppers: Shoppers,
        settings: LoadSettings,
        say: Say = print,
    ) -> None:
        self.url = url
        self.base_url = base_url
        self.fake = fake
        self.shoppers = shoppers
        self.settings = settings
        self.say = say
        self.rng = random.Random(settings.seed)
        # Stripe orders placed and not yet paid: what the webhook scenarios pay.
        self.unpaid: list[StripeOrder] = []
        self.tally = _Tally()

    def source(self, payment_method: str) -> CheckoutSource:
        return CheckoutSource(self.base_url, self.shoppers, payment_method, self.rng)

    async def measure(self, groups: set[str]) -> list[dict[str, Any]]:
        out = []
        if "orders" in groups:
            out.append(await self.checkout("cod"))
            out.append(await self.checkout("stripe"))
        if "webhooks" in groups:
            out += await self.webhooks()
        return out

    # -- checkout ----------------------------------------------------------------

    async def checkout(self, payment_method: str) -> dict[str, Any]:
        name = f"checkout_{payment_method}"
        collect = self.unpaid if payment_method == "stripe" else None
        check = checkout_check(payment_method, collect)
        sanity = await self._checkout_sanity(payment_method, check)
        s = self.settings
        # Warms pools, caches and the Stripe client's connections; not recorded.
        warmup = await load.run_calls(
            self.base_url,
            self.source(payment_method),
            clients=max(s.clients),
            duration_s=s.warmup_s,
            max_requests=s.max_requests,
            expect=201,
            check=check,
            engine=s.engine,
        )
        self._count_orders(payment_method, warmup.requests)
        results = []
        for clients in s.clients:
            result, opened = await self._measured(
                self.source(payment_method), clients, check, expect=201
            )
            self._count_orders(payment_method, result.requests)
            self._print(name, result, opened, "orders/s")
            results.append(result.as_dict() | {"db_sessions_opened": opened})
        return {
            "name": name,
            "group": "orders",
            "summary": f"POST {CHECKOUT_PATH}, payment_method {payment_method}: a random buyer, "
            f"1-3 of {len(self.shoppers.product_ids):,} products, 1-2 units each, home delivery, "
            "a fresh Idempotency-Key"
            + ("; the server asks the fake Stripe for a PaymentIntent" if collect else ""),
            "unit": "orders/s",
            "target_per_s": ORDER_TARGET_PER_S,
            "sanity": sanity,
            "results": results,
        }

    async def _checkout_sanity(
        self, payment_method: str, check: load.Check
    ) -> list[dict[str, Any]]:
        """One order must be placed (201) and a retry with its key must replay it."""
        call = self.source(payment_method)()
        first = await _send_once(self.base_url, call)
        problem = check(call, first.content) if first.status_code == 201 else None
        if first.status_code != 201 or problem:
            raise RuntimeError(
                f"checkout ({payment_method}) answered {first.status_code} {problem or ''}: "
                f"{first.text[:2000]}"
            )
        again = await _send_once(self.base_url, call)
        replayed = again.headers.get("Idempotent-Replayed") == "true"
        if again.status_code != 201 or not replayed or again.json()["id"] != first.json()["id"]:
            raise RuntimeError(
                f"a retry with the same Idempotency-Key answered {again.status_code}: "
                f"{again.text[:2000]}"
            )
        self._count_orders(payment_method, 1)
        order = first.json()
        return [
            {
                "request": f"POST {CHECKOUT_PATH} ({payment_method}, "
                f"{len(order['fulfilments'])} fulfilments)",
                "status": first.status_code,
                "order_status": order["status"],
                "retry_status": again.status_code,
                "retry_replayed": replayed,
            }
        ]

    def _count_orders(self, payment_method: str, placed: int) -> None:
        if payment_method == "cod":
            self.tally.cod_orders += placed
        else:
            self.tally.stripe_orders += placed

    # -- webhooks ----------------------------------------------------------------

    async def webhooks(self) -> list[dict[str, Any]]:
        s = self.settings
        delivered: list[Delivery] = []
        sanity = await self._webhook_sanity(delivered)
        await self._fill(WEBHOOK_WARMUP_EVENTS)
        warm = self._take(WEBHOOK_WARMUP_EVENTS)
        warmup = await load.run_calls(
            self.base_url,
            WebhookSource(self.base_url, warm, repeat=False),
            clients=max(s.clients),
            duration_s=s.warmup_s,
            max_requests=s.max_requests,
            check=webhook_check(duplicate=False, delivered=delivered),
            engine=s.engine,
        )
        self.tally.confirmed_by_webhook += warmup.requests
        rate = max(warmup.requests_per_s, 1.0)
        first_results = []
        for clients in s.clients:
            wanted = s.webhook_events or math.ceil(rate * s.duration_s * WEBHOOK_SPARE)
            wanted = max(1, min(wanted, s.max_requests))
            await self._fill(wanted)
            batch = self._take(wanted)
            self.tally.events_prepared.append(len(batch))
            result, opened = await self._measured(
                WebhookSource(self.base_url, batch, repeat=False),
                clients,
                webhook_check(duplicate=False, delivered=delivered),
            )
            self.tally.confirmed_by_webhook += result.requests
            self._print("webhooks", result, opened, "events/s")
            first_results.append(
                result.as_dict() | {"db_sessions_opened": opened, "events_prepared": len(batch)}
            )
        # Redeliveries of events already applied: the same ids and bodies, newly signed.
        await load.run_calls(
            self.base_url,
            WebhookSource(self.base_url, delivered, repeat=True),
            clients=max(s.clients),
            duration_s=s.warmup_s,
            max_requests=s.max_requests,
            check=webhook_check(duplicate=True),
            engine=s.engine,
        )
        duplicate_results = []
        for clients in s.clients:
            result, opened = await self._measured(
                WebhookSource(self.base_url, delivered, repeat=True),
                clients,
                webhook_check(duplicate=True),
            )
            self._print("webhooks_duplicate", result, opened, "events/s")
            duplicate_results.append(
                result.as_dict() | {"db_sessions_opened": opened, "distinct_events": len(delivered)}
            )
        return [
            {
                "name": "webhooks",
                "group": "webhooks",
                "summary": f"POST {WEBHOOK_PATH}: signed payment_intent.succeeded, one per "
                "Stripe order awaiting payment, each event once; expects outcome order-confirmed",
                "unit": "events/s",
                "target_per_s": WEBHOOK_TARGET_PER_S,
                "sanity": sanity,
                "results": first_results,
            },
            {
                "name": "webhooks_duplicate",
                "group": "webhooks",
                "summary": f"POST {WEBHOOK_PATH}: events already applied, delivered again "
                "(same id and body, new signature); expects duplicate: true",
                "unit": "events/s",
                "target_per_s": None,
                "sanity": [],
                "results": duplicate_results,
            },
        ]

    async def _webhook_sanity(self, delivered: list[Delivery]) -> list[dict[str, Any]]:
        """One event must confirm its order, and the same event again must be a duplicate."""
        await self._fill(1)
        [delivery] = self._take(1)
        checks = []
        for duplicate in (False, True):
            call = webhook_call(self.base_url, delivery)
            answer = await _send_once(self.base_url, call)
            problem = (
                webhook_check(duplicate=duplicate)(call, answer.content)
                if answer.status_code == 200
                else None
            )
            if answer.status_code != 200 or problem:
                raise RuntimeError(
                    f"a webhook delivery answered {answer.status_code} {problem or ''}: "
                    f"{answer.text[:2000]}"
                )
            checks.append(
                {"request": f"POST {WEBHOOK_PATH} ({delivery.event_id})", **answer.json()}
            )
        self.tally.confirmed_by_webhook += 1
        delivered.append(delivery)
        return checks

    def _take(self, count: int) -> list[Delivery]:
        taken, self.unpaid = self.unpaid[:count], self.unpaid[count:]
        return deliveries_for(self.fake, taken)

    async def _fill(self, wanted: int) -> None:
        """Place Stripe orders (unmeasured) until `wanted` await payment, or time is up."""
        missing = wanted - len(self.unpaid)
        if missing <= 0:
            return
        self.say(f"  (placing {missing:,} Stripe orders to pay, unmeasured)")
        result = await load.run_calls(
            self.base_url,
            self.source("stripe"),
            clients=max(self.settings.clients),
            duration_s=FILL_LIMIT_S,
            max_requests=missing,
            expect=201,
            check=checkout_check("stripe", self.unpaid),
            engine=self.settings.engine,
        )
        self.tally.stripe_orders += result.requests
        self.tally.filled += result.requests
        self.tally.fill_errors += result.errors
        if result.errors:
            self.say(f"  warning: placing orders to pay met errors: {result.statuses}")

    # -- shared ------------------------------------------------------------------

    async def _measured(
        self, source: load.Source, clients: int, check: load.Check, *, expect: int = 200
    ) -> tuple[load.LoadResult, int]:
        s = self.settings
        opened = await sessions_opened(self.url)
        result = await load.run_calls(
            self.base_url,
            source,
            clients=clients,
            duration_s=s.duration_s,
            max_requests=s.max_requests,
            expect=expect,
            check=check,
            engine=s.engine,
            roots=s.roots,
        )
        opened = await sessions_opened(self.url) - opened - 1  # this probe's own session
        return result, opened

    def _print(self, name: str, result: load.LoadResult, opened: int, unit: str) -> None:
        self.say(
            f"  {name:<24} {result.clients:>4} clients  {result.requests_per_s:>8.1f} {unit}"
            f"  p50 {result.p50_ms:>7.2f}  p95 {result.p95_ms:>7.2f}  p99 {result.p99_ms:>7.2f}"
            f" ms  errors {result.errors}  client cpu {result.client_cpu_cores:.2f}"
            f"  new db sessions {opened}"
            + result.cpu_line()
            + (f"  {result.statuses}" if result.errors else "")
        )

    async def database_check(self) -> dict[str, Any]:
        """What the database holds after the run, beside what the scenarios say they did."""
        conn = await connect(self.url)
        try:
            orders = await conn.fetch(
                "SELECT payment_method, status, count(*) AS n FROM orders GROUP BY 1, 2"
            )
            events = await conn.fetch(
                "SELECT outcome, count(*) AS n FROM stripe_events GROUP BY 1 ORDER BY 1"
            )
            negative = await conn.fetchval(
                "SELECT count(*) FROM products WHERE stock < 0 OR reserved < 0"
            )
        finally:
            await conn.close()
        held: Counter[str] = Counter()
        for row in orders:
            held[f"{row['payment_method']} {row['status']}"] += int(row["n"])
        t = self.tally
        expected = {
            "cod confirmed": t.cod_orders,
            "stripe awaiting_payment + confirmed": t.stripe_orders,
            "stripe confirmed": t.confirmed_by_webhook,
        }
        found = {
            "cod confirmed": held["cod confirmed"],
            "stripe awaiting_payment + confirmed": held["stripe awaiting_payment"]
            + held["stripe confirmed"],
            "stripe confirmed": held["stripe confirmed"],
        }
        return {
            "orders": dict(sorted(held.items())),
            "stripe_events": {row["outcome"]: int(row["n"]) for row in events},
            "products_below_zero": int(negative or 0),
            "expected": expected,
            "found": found,
            "consistent": expected == found and not negative,
            "orders_placed_to_pay": t.filled,
            "errors_placing_orders_to_pay": t.fill_errors,
            "webhook_events_prepared": t.events_prepared,
        }
