"""The session helpers of services.db, on a real PostgreSQL and a pool of one connection."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.db import (
    autocommit_driver,
    built,
    create_engine,
    driver_connection,
    session_factory,
)
from services.orders.models import OrderEvent
from services.users.models import Role, User


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    yield session_factory(engine)
    await engine.dispose()


async def test_an_autocommit_statement_runs_outside_any_transaction(one_connection) -> None:
    async with autocommit_driver(one_connection) as driver:
        assert not driver.is_in_transaction()
        # Each statement is its own transaction.
        first = await driver.fetchval("SELECT txid_current()")
        assert await driver.fetchval("SELECT txid_current()") != first


async def test_a_statements_own_error_gives_the_connection_back_for_reuse(one_connection) -> None:
    async with autocommit_driver(one_connection) as driver:
        backend = await driver.fetchval("SELECT pg_backend_pid()")
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with autocommit_driver(one_connection) as driver:
            await driver.fetchval("SELECT 1 / 0")
    async with autocommit_driver(one_connection) as driver:
        assert await driver.fetchval("SELECT pg_backend_pid()") == backend


async def test_a_lost_connection_is_not_lent_again(one_connection) -> None:
    async with autocommit_driver(one_connection) as driver:
        backend = await driver.fetchval("SELECT pg_backend_pid()")
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        async with autocommit_driver(one_connection) as driver:
            await driver.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    async with autocommit_driver(one_connection) as driver:
        assert await driver.fetchval("SELECT pg_backend_pid()") != backend


async def test_a_driver_statement_first_in_a_session_joins_its_transaction(one_connection) -> None:
    """Sent before any statement of SQLAlchemy's, it must still roll back with the session."""

    class Abandon(Exception):
        pass

    name = f"driver_first_{uuid.uuid4().hex[:8]}"
    with pytest.raises(Abandon):
        async with one_connection() as session, session.begin():
            driver = await driver_connection(session)
            assert driver.is_in_transaction()
            await driver.execute(f"CREATE TABLE {name} (id int)")
            raise Abandon
    async with one_connection() as session:
        found = await session.scalar(text("SELECT to_regclass(:name)"), {"name": name})
    assert found is None


async def test_a_begin_the_driver_itself_refuses_retires_the_connection(one_connection) -> None:
    """The BEGIN sent for a driver statement, on a connection whose protocol is busy.

    A statement still running on the same connection stands in for one cut off by a
    server restart. The failure must read as a lost connection (the service answers
    503, not 500), and the connection must not be lent again.
    """
    with pytest.raises(DBAPIError) as refused:
        async with one_connection() as session, session.begin():
            connection = await session.connection()
            raw = (await connection.get_raw_connection()).driver_connection
            backend = await raw.fetchval("SELECT pg_backend_pid()")
            busy = asyncio.create_task(raw.execute("SELECT pg_sleep(0.3)"))
            await asyncio.sleep(0.05)
            await driver_connection(session)
    assert refused.value.connection_invalidated
    with contextlib.suppress(asyncpg.InterfaceError, asyncpg.PostgresError):
        await busy
    async with one_connection() as session:
        assert await session.scalar(text("SELECT pg_backend_pid()")) != backend


def test_a_built_instance_reads_what_it_was_given_and_tracks_later_changes() -> None:
    buyer = uuid.uuid4()
    event = built(OrderEvent, order_id=buyer, from_status=None, to_status="confirmed")

    assert (event.order_id, event.from_status, event.to_status) == (buyer, None, "confirmed")
    assert event.reason is None  # left out: read as on a new instance
    assert inspect(event).transient
    event.reason = "checkout"
    assert inspect(event).attrs.reason.history.added == ["checkout"]


def test_building_with_an_attribute_the_model_lacks_is_refused_as_the_constructor_does() -> None:
    with pytest.raises(TypeError, match="no attribute 'colour'"):
        built(OrderEvent, order_id=uuid.uuid4(), colour="red")
    with pytest.raises(TypeError):
        OrderEvent(order_id=uuid.uuid4(), colour="red")


async def test_a_built_instance_can_still_be_added_to_a_session_and_written(
    session: AsyncSession,
) -> None:
    user = built(
        User,
        id=uuid.uuid4(),
        email=f"built-{uuid.uuid4().hex}@example.cn",
        password_hash="x",
        role=Role.buyer,
        display_name="Built",
        phone=None,
        county_code=None,
        cooperative_id=None,
        site_id=None,
        is_active=True,
    )
    session.add(user)
    await session.flush()

    stored = await session.scalar(select(User.display_name).where(User.id == user.id))
    assert stored == "Built"
