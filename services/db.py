"""Declarative base, engine and session helpers shared by every area."""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Any, ClassVar, TypeVar, cast

import asyncpg
from sqlalchemy import DateTime, Enum, MetaData, TextClause, func
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.instrumentation import manager_of_class

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True)}


class UUIDPrimaryKey:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


_Model = TypeVar("_Model", bound="Base")


def built(model: type[_Model], /, **values: Any) -> _Model:
    """An instance holding `values` as if loaded, made without the ORM's constructor.

    For hot paths whose rows are written or read by fixed SQL and never join a
    session: the declarative constructor sends every attribute through the ORM's
    change tracking (about 1.4 µs an attribute, some 30 µs for an order), which
    such an instance never uses. Reading works as on any instance; setting an
    attribute afterwards is tracked as usual. Give every column the reader needs:
    an attribute left out reads as None, as on a new instance.
    """
    unknown = values.keys() - _attributes(model)
    if unknown:
        raise TypeError(f"{model.__name__} has no attribute {sorted(unknown)[0]!r}")
    instance = manager_of_class(model).new_instance()
    instance.__dict__.update(values)
    return instance


@cache
def _attributes(model: type[Base]) -> frozenset[str]:
    return frozenset(model.__mapper__.attrs.keys())


def text_enum(cls: type[enum.Enum], name: str, length: int = 20) -> Enum:
    """An enum stored as text, its column typed by the domain `name` over varchar(`length`).

    The domain's CHECK (`ck_<name>`) lists the values: migration 0024 made them domains,
    not table constraints, which PostgreSQL rebuilds for every statement writing to the
    table. Adding a value is a plain migration that replaces the domain's constraint.
    `services.schema.compare_type` tells Alembic this type and its domain agree.
    """
    return Enum(cls, name=name, native_enum=False, create_constraint=False, length=length)


def utcnow() -> datetime:
    return datetime.now(UTC)


def async_url(url: str | URL) -> URL:
    """Accept the usual `postgresql://` spellings and pick the asyncpg driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    # No pre-ping: it costs three round trips per checkout of a connection. Stale
    # connections are recycled by age instead, and a request that meets a dead one
    # fails as "database unavailable" (503) and is retried by the client.
    kwargs.setdefault("pool_recycle", 1800)
    return create_async_engine(async_url(url), **kwargs)


def session_factory(bind: Any) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work for jobs and the CLI: commit on success, roll back on error."""
    async with factory() as session, session.begin():
        yield session


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under a session, inside its transaction: for COPY, for
    bulk reads that SQLAlchemy's result processing would slow down, and for hot
    statements written as fixed SQL.

    SQLAlchemy's asyncpg adapter sends BEGIN only before the first statement it runs
    itself. A statement sent straight to the driver before that would run outside the
    session's transaction, committed at once whatever happens after; so BEGIN is
    sent here first when it has not been yet.
    """
    connection = await session.connection()
    pooled = await connection.get_raw_connection()
    adapted: Any = pooled.dbapi_connection
    if connection.in_transaction() and getattr(adapted, "_transaction", False) is None:
        # The adapter's own way to begin (private, hence the guard above).
        dbapi = connection.dialect.loaded_dbapi
        try:
            await adapted._start_transaction()
        except dbapi.Error as exc:
            if isinstance(exc, dbapi.InterfaceError | dbapi.InternalClientError):
                # Refused by the driver itself, not by the server: the connection's
                # protocol is busy or in a broken state (a statement cut off by a
                # server restart, say). It must not be lent again; and the request
                # meets a connection failure, a 503, not a 500.
                await connection.invalidate(exc)
                raise _wrapped(connection.dialect, exc, "BEGIN", invalidated=True) from exc
            raise _wrapped(connection.dialect, exc, "BEGIN") from exc
    return pooled.driver_connection


def _wrapped(
    dialect: Dialect, exc: Exception, statement: str | None, *, invalidated: bool = False
) -> Exception:
    """A driver error met outside SQLAlchemy's own execution, wrapped as SQLAlchemy wraps
    the errors of the statements it runs, so that callers handle one kind of error."""
    return DBAPIError.instance(
        statement,
        None,
        exc,
        dialect.loaded_dbapi.Error,
        connection_invalidated=invalidated or dialect.is_disconnect(cast(Any, exc), None, None),
        dialect=dialect,
    )


@asynccontextmanager
async def autocommit_driver(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[Any]:
    """An asyncpg connection for statements that each commit by themselves.

    For a hot path whose work is one statement (a function call, say): one round
    trip, no BEGIN or COMMIT, and none of the session's bookkeeping. Drawn from the
    engine's pool when the factory draws from one; a factory bound to a connection
    (joined to an outer transaction, as in the tests) lends that connection, and the
    statements join its transaction.
    """
    bind = factory.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        async with transaction(factory) as session:
            yield await driver_connection(session)
        return
    # A Connection of the engine, not a raw pool checkout: SQLAlchemy checks it out and
    # returns it (closing an overflow one) in its greenlet, and wraps a failure to
    # connect. It sends nothing itself: its BEGIN waits for a statement of its own.
    async with bind.connect() as connection:
        pooled = await connection.get_raw_connection()
        driver: Any = pooled.driver_connection
        try:
            yield driver
        except BaseException as exc:
            # A statement's own error leaves the connection as it was (no transaction to
            # abort); anything else (a lost connection, a cancelled wait) may not.
            if not isinstance(exc, asyncpg.PostgresError) or driver.is_closed():
                await connection.invalidate(exc if isinstance(exc, Exception) else None)
            raise


class DriverStatement:
    """A text() statement as the asyncpg driver takes it: `$1, $2, ...` in place of the
    named parameters, compiled once. `args(params)` puts a dict of values in that order.

    For the paths that go around SQLAlchemy's execution (one-statement webhooks, a
    backlog batch's rows) and still keep their SQL in one readable, named text.
    """

    def __init__(self, statement: TextClause) -> None:
        compiled = statement.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
        self.sql: str = compiled.string
        self._names: tuple[str, ...] = tuple(compiled.positiontup or ())

    def args(self, params: dict[str, Any]) -> list[Any]:
        return [params[name] for name in self._names]
