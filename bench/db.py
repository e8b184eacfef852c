"""Database plumbing for the benchmark: connection arguments, fresh databases, facts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from services.db import async_url


@dataclass(frozen=True, slots=True)
class Target:
    """Where a PostgreSQL server listens, in the terms libpq tools (pgbench) understand."""

    host: str | None
    port: int | None
    user: str | None
    password: str | None
    database: str | None

    def asyncpg_args(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
        }


def target_of(url: str) -> Target:
    """Split a SQLAlchemy URL; a Unix socket comes as `?host=/dir&port=N` (the embedded server)."""
    parsed = make_url(url)
    host = parsed.query.get("host") or parsed.host
    port = parsed.query.get("port") or parsed.port
    return Target(
        host=str(host) if host else None,
        port=int(str(port)) if port else None,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database,
    )


def with_database(url: str, name: str) -> str:
    return async_url(url).set(database=name).render_as_string(hide_password=False)


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**target_of(url).asyncpg_args())


async def create_database(server_url: str, name: str) -> str:
    """Create an empty database on the server of `server_url` (dropping a leftover one)."""
    conn = await connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    conn = await connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def server_facts(url: str) -> dict[str, Any]:
    """The server's version and the settings that matter for reading the figures."""
    conn = await connect(url)
    try:
        facts: dict[str, Any] = {
            "version": await conn.fetchval("SELECT version()"),
            "version_num": int(await conn.fetchval("SHOW server_version_num")),
        }
        for name in (
            "shared_buffers",
            "effective_cache_size",
            "work_mem",
            "max_connections",
            "jit",
            "max_parallel_workers_per_gather",
            "random_page_cost",
        ):
            facts[name] = await conn.fetchval(f"SHOW {name}")
        return facts
    finally:
        await conn.close()


async def sessions_opened(url: str) -> int:
    """PostgreSQL sessions ever opened on the database: shows pool churn under load."""
    conn = await connect(url)
    try:
        # Statistics are flushed at most once a second; wait for the latest.
        await asyncio.sleep(1.1)
        return int(
            await conn.fetchval(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            )
            or 0
        )
    finally:
        await conn.close()
