"""PostgreSQL restarted while 32 buyers check out.

A real uvicorn process serves a PostgreSQL this test owns (tests/faults/postgres.py).
32 buyers loop on cash-on-delivery checkouts, each checkout with its own
Idempotency-Key, retrying that key after any error until it is confirmed. In
the middle the server is stopped (`pg_ctl -m immediate`, every backend killed and
crash recovery on start, or `-m fast`), kept down for 2 s and started again.

While it is down the service must answer 503 `database-unavailable`, never a 500;
it must recover on its own; every order confirmed to a buyer must exist, exactly
once per key; and no unit of stock may be lost or made up.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.db import create_engine, session_factory
from services.orders.models import Order, OrderLine
from services.schema import upgrade
from services.users.models import User
from tests.conftest import create_database
from tests.faults.helpers import (
    Cast,
    auth,
    free_port,
    seed,
    service_env,
    spawn,
    stock_discrepancies,
    stop,
    wait_ready,
)
from tests.faults.postgres import RestartablePostgres
from tests.orders_helpers import cart

pytestmark = [pytest.mark.faults, pytest.mark.slow]

BUYERS = 32
BEFORE, DOWN, AFTER = 3.0, 2.0, 4.0  # seconds of checkouts before, during, after the outage
SETTLED = 3.0  # seconds after the restart by which no request may fail any more
RETRY_PAUSE = 0.1  # a buyer's app retrying quickly, to see the outage from inside
GIVE_UP = 60.0  # a checkout still unconfirmed this long after it started fails the test
UNAVAILABLE = "/problems/database-unavailable"


@dataclass
class Attempt:
    key: str
    sent: float
    received: float
    status: int | None  # None: no HTTP answer at all
    problem: str | None = None
    retry_after: str | None = None
    order_id: str | None = None
    replayed: bool = False


@dataclass
class Served:
    base_url: str
    database_url: str
    cast: Cast
    log: Path


@pytest.fixture
def restartable() -> Iterator[RestartablePostgres]:
    folder = Path(tempfile.mkdtemp(prefix="marketplace-restart-"))
    server = RestartablePostgres(folder / "pg")
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def served(restartable: RestartablePostgres, tmp_path: Path) -> AsyncIterator[Served]:
    url = await create_database(restartable.url, "marketplace")
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    cast = await seed(url, cooperatives=2, products_per_cooperative=2, stock=100_000, buyers=BUYERS)
    port = free_port()
    log = tmp_path / "server.log"
    server = spawn(
        [
            *(sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
        ],
        # The default single-machine shape: a job worker inside the API process.
        env=service_env(url, tmp_path / "data", MARKETPLACE_LOG_LEVEL="ERROR"),
        log=log,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        await wait_ready(base_url, server)
        yield Served(base_url, url, cast, log)
    finally:
        stop(server)


async def post(client: httpx.AsyncClient, key: str, user: User, body: dict[str, Any]) -> Attempt:
    loop = asyncio.get_running_loop()
    sent = loop.time()
    try:
        response = await client.post(
            "/v1/checkout", json=body, headers=auth(user) | {"Idempotency-Key": key}
        )
    except httpx.TransportError:
        return Attempt(key, sent, loop.time(), None)
    attempt = Attempt(key, sent, loop.time(), response.status_code)
    if response.status_code == 201:
        attempt.order_id = response.json()["id"]
        attempt.replayed = response.headers.get("Idempotent-Replayed") == "true"
    elif response.headers.get("content-type", "").startswith("application/problem+json"):
        attempt.problem = response.json().get("type")
        attempt.retry_after = response.headers.get("Retry-After")
    return attempt


async def buyer_loop(
    client: httpx.AsyncClient,
    user: User,
    cast: Cast,
    enough: asyncio.Event,
    attempts: list[Attempt],
    placed: dict[str, tuple[uuid.UUID, dict[str, Any]]],
    seed_: int,
) -> None:
    """Checkout after checkout; each key is retried until its order is confirmed."""
    rng = random.Random(seed_)
    loop = asyncio.get_running_loop()
    while not enough.is_set():
        key = uuid.uuid4().hex
        chosen = rng.sample(cast.products, rng.randint(1, 2))
        body = cart(*((product, rng.randint(1, 3)) for product in chosen))
        started = loop.time()
        while True:
            attempt = await post(client, key, user, body)
            attempts.append(attempt)
            if attempt.status == 201:
                placed[key] = (user.id, body)
                break
            if loop.time() - started > GIVE_UP:
                return  # the assertions report the key without an order
            await asyncio.sleep(RETRY_PAUSE)


@pytest.mark.parametrize("shutdown", ["immediate", "fast"])
async def test_checkouts_survive_a_postgres_restart(
    served: Served, restartable: RestartablePostgres, shutdown: str
) -> None:
    """`immediate` kills every backend, as a crash would (recovery on start); `fast`
    ends every session with an error and shuts down cleanly, as a planned restart."""
    cast = served.cast
    attempts: list[Attempt] = []
    placed: dict[str, tuple[uuid.UUID, dict[str, Any]]] = {}
    enough = asyncio.Event()
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=BUYERS * 2)
    async with httpx.AsyncClient(base_url=served.base_url, timeout=30, limits=limits) as client:
        buyers = [
            asyncio.create_task(buyer_loop(client, b, cast, enough, attempts, placed, i))
            for i, b in enumerate(cast.buyers)
        ]
        await asyncio.sleep(BEFORE)
        await asyncio.to_thread(restartable.stop, shutdown)
        down_at = loop.time()
        await asyncio.sleep(DOWN)
        restarting_at = loop.time()
        await asyncio.to_thread(restartable.start)
        up_at = loop.time()
        await asyncio.sleep(AFTER)
        enough.set()
        await asyncio.gather(*buyers)

        # A retry after the confirmation replays it: the same order, nothing new.
        troubled = sorted({a.key for a in attempts if a.status != 201})
        replays = {
            key: await post(client, key, _buyer(cast, placed[key][0]), placed[key][1])
            for key in troubled
            if key in placed
        }

    statuses = Counter(a.status for a in attempts)
    print(  # the figures of the run, for whoever reads `pytest -s`
        f"\nrestart ({shutdown}): {len(attempts)} requests {dict(statuses)}, {len(placed)} orders, "
        f"{sum(a.replayed for a in attempts)} confirmed by a replay, "
        f"outage {up_at - down_at:.1f} s"
    )
    server_errors = _server_errors(served.log)
    assert not server_errors, server_errors

    # The service answered every request, and only with a success or a 503.
    assert statuses[None] == 0, "requests got no HTTP answer"
    assert set(statuses) <= {201, 503}, statuses
    unavailable = [a for a in attempts if a.status == 503]
    assert {(a.problem, a.retry_after) for a in unavailable} == {(UNAVAILABLE, "5")}

    # While the server was down, every request was a 503.
    while_down = [a for a in attempts if a.sent >= down_at and a.received <= restarting_at]
    assert len(while_down) >= BUYERS, "the outage was not seen"
    assert {a.status for a in while_down} == {503}

    # It came back by itself, and soon was fully well again.
    after = sorted((a for a in attempts if a.sent >= up_at), key=lambda a: a.sent)
    first_success = next(a for a in after if a.status == 201)
    assert first_success.received - up_at < 5.0
    late_failures = [a for a in after if a.sent >= up_at + SETTLED and a.status != 201]
    assert late_failures == []
    assert sum(a.status == 201 for a in after) >= BUYERS

    # Every key ended with one confirmed order, and each retry replayed it.
    keys = {a.key for a in attempts}
    assert keys == set(placed), "a checkout was never confirmed"
    confirmed: dict[str, set[str]] = {}
    for a in attempts:
        if a.order_id is not None:
            confirmed.setdefault(a.key, set()).add(a.order_id)
    assert all(len(ids) == 1 for ids in confirmed.values())
    order_of = {key: next(iter(ids)) for key, ids in confirmed.items()}
    for key, replay in replays.items():
        assert (replay.status, replay.order_id, replay.replayed) == (201, order_of[key], True)

    # The database holds exactly the confirmed orders, with the lines each buyer asked for.
    engine = create_engine(served.database_url)
    try:
        async with session_factory(engine)() as session:
            orders = {str(o.id): o for o in (await session.scalars(select(Order))).all()}
            lines: dict[str, list[tuple[str, int]]] = {}
            for line in (await session.scalars(select(OrderLine))).all():
                lines.setdefault(str(line.order_id), []).append(
                    (str(line.product_id), line.quantity)
                )
            assert set(orders) == set(order_of.values())
            for key, order_id in order_of.items():
                buyer_id, body = placed[key]
                asked = sorted((line["product_id"], line["quantity"]) for line in body["lines"])
                assert orders[order_id].buyer_id == buyer_id
                assert sorted(lines[order_id]) == asked
            assert await stock_discrepancies(session, cast.initial_stock) == []
    finally:
        await engine.dispose()


def _buyer(cast: Cast, user_id: uuid.UUID) -> User:
    return next(b for b in cast.buyers if b.id == user_id)


def _server_errors(log: Path) -> list[str]:
    """Lines of the server's log about unhandled errors (a 500) or tracebacks of them."""
    text = log.read_text(errors="replace")
    return [line for line in text.splitlines() if "unhandled error" in line][:5]
