"""The parcel tracking scenarios: AfterShip pushes through POST /v1/webhooks/tracking/aftership.

The parcels are the generated shipments (`bench/datagen.py`): cash-on-delivery
orders shipped by SF Express and registered with AfterShip. Each push is what
AfterShip posts when a parcel gets a new checkpoint: a `tracking_update` event
with an event id of its own, whose tracking lists every checkpoint so far, the
new one last, signed with the webhook secret (base64 HMAC-SHA256 of the raw
body, no timestamp, so a push can be built before it is sent). Bodies come from
the test suite's fake (`tests.fakes.tracking_pushes.aftership_push`).

A parcel's journey has 4 to 9 scans: accepted by the carrier in the
cooperative's county, departures from hubs, out for delivery, delivered.
Four times as many parcels as senders are under way at once, walked
round-robin, each push one scan further; a delivered parcel makes room for the
next pending one. So, once the first journeys end (after a few hundred pushes),
most pushes are in-transit scans and about one in six and a half is a delivery
(which delivers the fulfilment and the order), however long the run, and
senders seldom push the same parcel at the same moment.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from bench import load
from bench.checkout import LoadSettings
from bench.db import connect, sessions_opened
from services.orders.service import RECOGNITION_JOB
from services.tracking.kuaidi100 import BEIJING
from tests.fakes.tracking_pushes import aftership_push

GROUPS = ("tracking",)
TRACKING_TARGET_PER_S = 1_500
# This run's only: nothing real is reached with it.
AFTERSHIP_WEBHOOK_SECRET = "bench-aftership-webhook-secret"  # noqa: S105
TRACKING_PATH = "/v1/webhooks/tracking/aftership"
# What the server answers AfterShip for every push it takes, new or seen before.
ACKNOWLEDGEMENT = {"received": True}
CARRIER = "sf"
# Parcels under way at once, per sender: enough that a parcel's last push has
# almost always been answered when its next is sent, few enough that the mix of
# scans (in transit, out for delivery, delivered) settles within the warm-up.
IN_FLIGHT_PER_SENDER = 4
SCANS = (4, 9)  # fewest and most scans of a journey
SCAN_EVERY = timedelta(hours=3)
# Pushes built for the warm-up per second of it: more than the server can take.
WARMUP_PUSHES_PER_S = 3_000
# Pushes built for a measured run beyond the warm-up's rate × duration, so that
# the run ends by its duration rather than by running out of pushes.
SPARE = 1.25
# Pushes kept (the first accepted) to be delivered again by the duplicate scenario.
DUPLICATE_POOL = 20_000
Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Parcel:
    number: str
    shipped_at: datetime
    origin: str  # the cooperative's county
    destination: str  # the buyer's county
    scans: int  # the journey's length; the last scan is the delivery

    def scan(self, index: int) -> tuple[str, str, str | None]:
        """The `index`-th checkpoint: (AfterShip subtag, time in Beijing, location)."""
        when = self.shipped_at.replace(microsecond=0) + (index + 1) * SCAN_EVERY
        at = when.astimezone(BEIJING).isoformat()
        if index == self.scans - 1:
            return "Delivered_001", at, self.destination
        if index == self.scans - 2:
            return "OutForDelivery_001", at, f"{self.destination}营业点"
        if index == 0:
            return "InTransit_002", at, f"{self.origin}营业点"  # accepted by the carrier
        hub = "虚构省示范市转运中心" if index % 2 else f"{self.destination}分拨中心"
        return "InTransit_007", at, hub  # departed a facility


@dataclass(frozen=True, slots=True)
class Push:
    """What one push reports: a parcel's scan, and whether that scan is its delivery."""

    number: str
    scan: int
    delivers: bool


def aftership_settings() -> dict[str, str]:
    """The server's AfterShip configuration: a webhook secret; no API key, so nothing is polled."""
    return {"MARKETPLACE_AFTERSHIP_WEBHOOK_SECRET": AFTERSHIP_WEBHOOK_SECRET}


async def load_parcels(url: str, seed: int) -> list[Parcel]:
    """The pending AfterShip parcels, by tracking number, each with a journey length."""
    conn = await connect(url)
    try:
        rows = await conn.fetch(
            """
            SELECT s.tracking_number, s.created_at, r.name AS origin,
                   o.delivery_address ->> 'county' AS destination
            FROM shipments s
            JOIN regions r ON r.code = s.county_code
            JOIN orders o ON o.id = s.order_id
            WHERE s.carrier = $1 AND s.provider = 'aftership' AND s.status = 'pending'
            ORDER BY s.tracking_number
            """,
            CARRIER,
        )
    finally:
        await conn.close()
    rng = random.Random(seed * 104_729)
    return [
        Parcel(
            row["tracking_number"],
            row["created_at"],
            row["origin"],
            row["destination"],
            rng.randint(*SCANS),
        )
        for row in rows
    ]


class PushPlan:
    """Pushes in the order they are to be sent: IN_FLIGHT journeys interleaved.

    Pushes are built ahead of a run (building one costs about 45 µs of the load
    generator's CPU), and those a run did not send go out first in the next one,
    so every parcel's scans are pushed in order and none is skipped.
    """

    def __init__(self, base_url: str, parcels: list[Parcel], in_flight: int) -> None:
        self.base_url = base_url
        self.parcels = parcels
        self.in_flight = in_flight
        self.under_way: deque[tuple[int, int]] = deque()  # (parcel, its next scan)
        self.next_parcel = 0
        self.unsent: deque[load.Call] = deque()

    def take(self, count: int) -> list[load.Call]:
        out: list[load.Call] = []
        while len(out) < count:
            call = self.unsent.popleft() if self.unsent else self._build()
            if call is None:
                break
            out.append(call)
        return out

    def give_back(self, calls: list[load.Call]) -> None:
        self.unsent.extendleft(reversed(calls))

    @property
    def left(self) -> int:
        """Pushes still to send."""
        return (
            len(self.unsent)
            + sum(self.parcels[p].scans - scan for p, scan in self.under_way)
            + sum(p.scans for p in self.parcels[self.next_parcel :])
        )

    def _build(self) -> load.Call | None:
        while len(self.under_way) < self.in_flight and self.next_parcel < len(self.parcels):
            self.under_way.append((self.next_parcel, 0))
            self.next_parcel += 1
        if not self.under_way:
            return None
        index, scan = self.under_way.popleft()
        parcel = self.parcels[index]
        if scan + 1 < parcel.scans:
            self.under_way.append((index, scan + 1))
        body, headers = aftership_push(
            AFTERSHIP_WEBHOOK_SECRET,
            carrier=CARRIER,
            number=parcel.number,
            # As AfterShip sends it: every checkpoint so far, the new one last.
            checkpoints=[parcel.scan(i) for i in range(scan + 1)],
            event_id=str(uuid.uuid4()),
        )
        return load.make_call(
            self.base_url,
            "POST",
            TRACKING_PATH,
            headers=tuple(headers.items()),
            body=body,
            tag=Push(parcel.number, scan, scan + 1 == parcel.scans),
        )


class Batch:
    """Prepared pushes, each once (first deliveries), or round and round (redeliveries)."""

    def __init__(self, calls: list[load.Call], *, repeat: bool) -> None:
        if not calls:
            raise ValueError("no pushes to send")
        self.calls = calls
        self.repeat = repeat
        self.position = 0

    def __call__(self) -> load.Call | None:
        if not self.repeat and self.position >= len(self.calls):
            return None
        call = self.calls[self.position % len(self.calls)]
        self.position += 1
        return call

    def unsent(self) -> list[load.Call]:
        return [] if self.repeat else self.calls[self.position :]


@dataclass(slots=True)
class _Tally:
    """What the scenarios did, to compare with what the database holds afterwards."""

    accepted: int = 0  # distinct pushes acknowledged (200 and the acknowledgement)
    deliveries: int = 0  # of which a parcel's last scan
    refused: int = 0  # distinct pushes sent and not acknowledged
    redelivered: int = 0  # pushes sent again and acknowledged
    pool: list[load.Call] = field(default_factory=list)  # what the duplicates send

    def accept(self, call: load.Call) -> None:
        self.accepted += 1
        self.deliveries += call.tag.delivers
        if len(self.pool) < DUPLICATE_POOL:
            self.pool.append(call)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def ack_check(accepted: Callable[[load.Call], None] | None = None) -> load.Check:
    """AfterShip's acknowledgement; `accepted` counts a push sent for the first time."""

    def check(call: load.Call, body: bytes) -> str | None:
        if _json(body) != ACKNOWLEDGEMENT:
            return "unexpected body"
        if accepted is not None:
            accepted(call)
        return None

    return check


async def _send_once(
    base_url: str, call: load.Call, headers: dict[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        return await client.request(
            call.method, call.path, headers=dict(call.headers) | (headers or {}), content=call.body
        )


class Tracking:
    """Runs the tracking group against one server, then checks the database."""

    def __init__(
        self,
        url: str,
        base_url: str,
        plan: PushPlan,
        settings: LoadSettings,
        say: Say = print,
    ) -> None:
        self.url = url
        self.base_url = base_url
        self.plan = plan
        self.settings = settings
        self.say = say
        self.tally = _Tally()

    async def measure(self) -> list[dict[str, Any]]:
        s = self.settings
        sanity = await self._sanity()
        warm = self.plan.take(min(s.max_requests, math.ceil(s.warmup_s * WARMUP_PUSHES_PER_S)))
        if not warm:
            raise RuntimeError("no parcel left to push after the sanity check")
        warmup, _ = await self._first_deliveries(warm, max(s.clients), s.warmup_s, measured=False)
        rate = max(warmup.requests_per_s, 1.0)
        first_results = []
        for clients in s.clients:
            batch = self.plan.take(
                max(1, min(math.ceil(rate * s.duration_s * SPARE), s.max_requests))
            )
            if not batch:
                self.say(f"  warning: no parcel left to push at {clients} clients (--shipments)")
                break
            result, opened = await self._first_deliveries(batch, clients, s.duration_s)
            self._print("tracking_webhooks", result, opened)
            first_results.append(
                result.as_dict() | {"db_sessions_opened": opened, "events_prepared": len(batch)}
            )
        # Redeliveries of pushes already acknowledged: the same event ids and bodies.
        pool = self.tally.pool
        warm_again = await load.run_calls(
            self.base_url,
            Batch(pool, repeat=True),
            clients=max(s.clients),
            duration_s=s.warmup_s,
            max_requests=s.max_requests,
            check=ack_check(),
            engine=s.engine,
        )
        self.tally.redelivered += warm_again.requests
        duplicate_results = []
        for clients in s.clients:
            result, opened = await self._measured(Batch(pool, repeat=True), clients)
            self.tally.redelivered += result.requests
            self._print("tracking_webhooks_duplicate", result, opened)
            duplicate_results.append(
                result.as_dict() | {"db_sessions_opened": opened, "distinct_events": len(pool)}
            )
        return [
            {
                "name": "tracking_webhooks",
                "group": "tracking",
                "summary": f"POST {TRACKING_PATH}: signed AfterShip tracking_update pushes, each "
                "with an event id of its own and one new checkpoint of one of "
                f"{self.plan.in_flight} parcels under way (walked round-robin; journeys of "
                f"{SCANS[0]}-{SCANS[1]} scans, the last a delivery, so most pushes are in "
                "transit), listing the parcel's earlier checkpoints too, as AfterShip does; "
                "expects 200 and AfterShip's acknowledgement",
                "unit": "events/s",
                "target_per_s": TRACKING_TARGET_PER_S,
                "sanity": sanity,
                "results": first_results,
            },
            {
                "name": "tracking_webhooks_duplicate",
                "group": "tracking",
                "summary": f"POST {TRACKING_PATH}: pushes already acknowledged, delivered again "
                "(same event id and body); expects 200 and the acknowledgement, and nothing "
                "stored (checked in the database afterwards)",
                "unit": "events/s",
                "target_per_s": None,
                "sanity": [],
                "results": duplicate_results,
            },
        ]

    async def _first_deliveries(
        self, calls: list[load.Call], clients: int, duration_s: float, *, measured: bool = True
    ) -> tuple[load.LoadResult, int]:
        batch = Batch(calls, repeat=False)
        check = ack_check(self.tally.accept)
        if measured:
            result, opened = await self._measured(batch, clients, check, duration_s)
        else:
            result = await load.run_calls(
                self.base_url,
                batch,
                clients=clients,
                duration_s=duration_s,
                max_requests=self.settings.max_requests,
                check=check,
                engine=self.settings.engine,
            )
            opened = 0
        self.tally.refused += result.errors
        self.plan.give_back(batch.unsent())
        return result, opened

    async def _measured(
        self,
        source: load.Source,
        clients: int,
        check: load.Check | None = None,
        duration_s: float | None = None,
    ) -> tuple[load.LoadResult, int]:
        s = self.settings
        opened = await sessions_opened(self.url)
        result = await load.run_calls(
            self.base_url,
            source,
            clients=clients,
            duration_s=duration_s or s.duration_s,
            max_requests=s.max_requests,
            check=check or ack_check(),
            engine=s.engine,
            roots=s.roots,
        )
        opened = await sessions_opened(self.url) - opened - 1  # this probe's own session
        return result, opened

    async def _sanity(self) -> list[dict[str, Any]]:
        """A push must add its checkpoint; the same push again, or one badly signed, nothing."""
        [call] = self.plan.take(1)
        checks = []
        wrong = {"aftership-hmac-sha256": "bm90IHRoZSBzaWduYXR1cmU="}
        attempts: tuple[tuple[str, dict[str, str], int], ...] = (
            ("first delivery", {}, 200),
            ("redelivery", {}, 200),
            ("wrong signature", wrong, 400),
        )
        for label, extra, wanted in attempts:
            answer = await _send_once(self.base_url, call, extra)
            events, status = await self._parcel(call.tag.number)
            body = _json(answer.content)
            right = (
                body == ACKNOWLEDGEMENT
                if wanted == 200
                else isinstance(body, dict) and str(body.get("type")).endswith("/invalid-signature")
            )
            if answer.status_code != wanted or not right or events != 1 or status != "in_transit":
                raise RuntimeError(
                    f"tracking push ({label}) answered {answer.status_code} {answer.text[:2000]}; "
                    f"the parcel holds {events} events and is {status}"
                )
            checks.append(
                {
                    "request": f"POST {TRACKING_PATH} ({label}, {call.tag.number})",
                    "status": answer.status_code,
                    "parcel_events": events,
                    "parcel_status": status,
                }
            )
        self.tally.accept(call)
        return checks

    async def _parcel(self, number: str) -> tuple[int, str | None]:
        conn = await connect(self.url)
        try:
            row = await conn.fetchrow(
                "SELECT s.status, (SELECT count(*) FROM shipment_events e "
                "WHERE e.shipment_id = s.id) AS events "
                "FROM shipments s WHERE s.carrier = $1 AND s.tracking_number = $2",
                CARRIER,
                number,
            )
        finally:
            await conn.close()
        return (int(row["events"]), row["status"]) if row else (0, None)

    def _print(self, name: str, result: load.LoadResult, opened: int) -> None:
        self.say(
            f"  {name:<28} {result.clients:>4} clients  {result.requests_per_s:>8.1f} events/s"
            f"  p50 {result.p50_ms:>7.2f}  p95 {result.p95_ms:>7.2f}  p99 {result.p99_ms:>7.2f}"
            f" ms  errors {result.errors}  client cpu {result.client_cpu_cores:.2f}"
            f"  new db sessions {opened}"
            + result.cpu_line()
            + (f"  {result.statuses}" if result.errors else "")
        )

    async def database_check(self) -> dict[str, Any]:
        """Events, pushes, parcels and orders in the database, beside what the scenarios did.

        Every acknowledged distinct push brought exactly one checkpoint not seen
        before, so the timeline holds one event per push: none lost, none doubled
        by a redelivery or by the earlier checkpoints each push repeats.
        """
        conn = await connect(self.url)
        try:
            events = int(await conn.fetchval("SELECT count(*) FROM shipment_events"))
            pushes = await conn.fetch(
                "SELECT outcome, count(*) AS n FROM tracking_pushes GROUP BY 1 ORDER BY 1"
            )
            parcels = await conn.fetch(
                "SELECT status, count(*) AS n FROM shipments GROUP BY 1 ORDER BY 1"
            )
            orders = await conn.fetch(
                "SELECT o.status, count(*) AS n FROM orders o "
                "WHERE EXISTS (SELECT 1 FROM shipments s WHERE s.order_id = o.id) "
                "GROUP BY 1 ORDER BY 1"
            )
            jobs = int(
                await conn.fetchval("SELECT count(*) FROM jobs WHERE kind = $1", RECOGNITION_JOB)
            )
        finally:
            await conn.close()
        by_outcome = {row["outcome"]: int(row["n"]) for row in pushes}
        by_parcel = {row["status"]: int(row["n"]) for row in parcels}
        by_order = {row["status"]: int(row["n"]) for row in orders}
        t = self.tally
        expected = {
            "shipment events": t.accepted,
            "pushes stored": t.accepted,
            "parcels delivered": t.deliveries,
            "orders delivered": t.deliveries,
            # Every parcel is cash on delivery, its cash not collected: a delivery earns
            # nothing yet and queues no attribution job (the collection would).
            "recognition jobs": 0,
        }
        found = {
            "shipment events": events,
            "pushes stored": sum(by_outcome.values()),
            "parcels delivered": by_parcel.get("delivered", 0),
            "orders delivered": by_order.get("delivered", 0),
            "recognition jobs": jobs,
        }
        return {
            "shipment_events": events,
            "distinct_pushes_accepted": t.accepted,
            "pushes_refused": t.refused,
            "redeliveries_acknowledged": t.redelivered,
            "tracking_pushes": by_outcome,
            "shipments": by_parcel,
            "orders": by_order,
            "expected": expected,
            "found": found,
            "consistent": expected == found,
            "pushes_left": self.plan.left,
        }
