"""What the fault tests share: committed databases, seeded people, tokens, the stock books."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.settings import Settings
from services.catalog.models import Product
from services.cooperatives.models import Cooperative
from services.db import create_engine, session_factory
from services.orders.models import Order, OrderLine, OrderStatus, PaymentStatus
from services.schema import upgrade
from services.users.models import Role, User
from services.users.tokens import issue_token
from tests.conftest import _PASSWORD_HASH, JWT_SECRET, create_database, drop_database
from tests.factories import PII_KEY, Builder, build_regions


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def committed_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    """A migrated database of its own on the test server, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = await create_database(server_url, name)
    try:
        engine = create_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
        yield url
    finally:
        await drop_database(server_url, name)


def app_settings(url: str, data_dir: Path, **extra: Any) -> Settings:
    """Settings of an in-process app on a committed database (no worker inside)."""
    base = Settings(
        database_url=url,
        jwt_secret=JWT_SECRET,
        pii_key=PII_KEY.decode(),
        data_dir=data_dir,
        log_level="WARNING",
        catalogue_cache_seconds=0,
        run_worker_in_process=False,
    )
    return base.model_copy(update=extra)


def service_env(url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a `marketplace` or uvicorn subprocess on `url`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MARKETPLACE_") and k != "DATABASE_URL"
    }
    env.update(
        DATABASE_URL=url,
        MARKETPLACE_JWT_SECRET=JWT_SECRET,
        MARKETPLACE_PII_KEY=PII_KEY.decode(),
        MARKETPLACE_DATA_DIR=str(data_dir),
        MARKETPLACE_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


REPO = Path(__file__).resolve().parents[2]


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a process of ours from the repository, its output appended to `log`.

    A file, not a pipe: a chatty process must never block on a full pipe.
    """
    with log.open("ab") as output:
        return subprocess.Popen(args, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=REPO)


def stop(process: subprocess.Popen[bytes], within: float = 30) -> int:
    """SIGTERM, then SIGKILL if it has not exited in time; the exit code."""
    process.terminate()
    try:
        return process.wait(within)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    """Poll `check` until it holds: for state another process changes."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.1)


async def wait_ready(base_url: str, process: subprocess.Popen[bytes], within: float = 60) -> None:
    """Poll /readyz until the server in `process` answers 200."""
    deadline = asyncio.get_running_loop().time() + within
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        while asyncio.get_running_loop().time() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the server at {base_url} was not ready within {within} s")


def auth(user: User) -> dict[str, str]:
    token = issue_token(
        user_id=user.id,
        role=user.role.value,
        secret=JWT_SECRET,
        ttl=timedelta(hours=2),
        now=datetime.now(UTC),
    )
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Cast:
    """The people and goods of a seeded database (committed; detached objects)."""

    admin: User
    cooperatives: list[Cooperative]
    managers: list[User]  # one per cooperative, same position
    products: list[Product]
    buyers: list[User]

    @property
    def initial_stock(self) -> dict[uuid.UUID, int]:
        return {p.id: p.stock for p in self.products}


async def seed(
    url: str,
    *,
    cooperatives: int = 1,
    products_per_cooperative: int = 1,
    stock: int = 1_000,
    price_fen: int = 2_500,
    buyers: int = 32,
) -> Cast:
    """The fictional county, cooperatives with a manager and products each, and buyers."""
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session, session.begin():
            admin = User(email="admin@example.com", password_hash=_PASSWORD_HASH, role=Role.admin)
            session.add(admin)
            await session.flush()
            world = Builder(session, admin, await build_regions(session))
            coops: list[Cooperative] = []
            products: list[Product] = []
            for _ in range(cooperatives):
                coop = await world.cooperative()
                coops.append(coop)
                for n in range(products_per_cooperative):
                    products.append(
                        await world.product(
                            coop, title=f"山货{n}", price_fen=price_fen, stock=stock
                        )
                    )
            managers = [
                User(
                    email=f"manager-{i}@example.com",
                    password_hash=_PASSWORD_HASH,
                    role=Role.manager,
                    cooperative_id=coop.id,
                )
                for i, coop in enumerate(coops)
            ]
            people = [
                User(email=f"buyer-{i}@example.com", password_hash=_PASSWORD_HASH, role=Role.buyer)
                for i in range(buyers)
            ]
            session.add_all([*managers, *people])
            await session.flush()
    finally:
        await engine.dispose()
    return Cast(admin, coops, managers, products, people)


async def stock_books(session: AsyncSession) -> dict[uuid.UUID, tuple[int, int, int]]:
    """Each product's (stock, reserved, sold_count) as the catalogue keeps them."""
    rows = (
        await session.execute(
            select(
                Product.id, Product.stock, Product.reserved, Product.sold_count
            ).execution_options(populate_existing=True)
        )
    ).all()
    return {row.id: (row.stock, row.reserved, row.sold_count) for row in rows}


async def holdings(session: AsyncSession) -> dict[uuid.UUID, tuple[int, int]]:
    """What the orders hold of each product, (reserved, sold), by the orders' own state.

    A live order holds its lines: reserved while unpaid, sold once paid (a cash
    order when its cash is collected). A cancelled order holds nothing.
    """
    live = Order.status != OrderStatus.cancelled
    paid = Order.payment_status != PaymentStatus.unpaid
    rows = (
        await session.execute(
            select(
                OrderLine.product_id,
                func.sum(case((live & ~paid, OrderLine.quantity), else_=0)),
                func.sum(case((live & paid, OrderLine.quantity), else_=0)),
            )
            .join(Order, Order.id == OrderLine.order_id)
            .group_by(OrderLine.product_id)
        )
    ).all()
    return {row[0]: (int(row[1]), int(row[2])) for row in rows}


async def stock_discrepancies(session: AsyncSession, initial: Mapping[uuid.UUID, int]) -> list[str]:
    """Where stock was lost or made up: empty when every unit is accounted for.

    For each product, stock + reserved + sold must equal the stock it started
    with, and reserved and sold must be what the orders hold.
    """
    books = await stock_books(session)
    held = await holdings(session)
    problems = []
    for product_id, start in initial.items():
        stock, reserved, sold = books[product_id]
        if stock + reserved + sold != start:
            problems.append(
                f"{product_id}: stock {stock} + reserved {reserved} + sold {sold} != {start}"
            )
        if (reserved, sold) != held.get(product_id, (0, 0)):
            problems.append(
                f"{product_id}: reserved/sold {(reserved, sold)} but orders hold "
                f"{held.get(product_id, (0, 0))}"
            )
    return problems
