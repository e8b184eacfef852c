"""The embedded PostgreSQL: sized for the machine once, an operator's own settings kept."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from app.embedded import MB, embedded_postgres, physical_memory, server_settings

pytestmark = pytest.mark.slow

GB = 1024 * MB


def test_shared_buffers_take_a_quarter_of_memory_within_bounds() -> None:
    assert server_settings(256 * MB)["shared_buffers"] == "128MB"
    assert server_settings(2 * GB)["shared_buffers"] == "512MB"
    assert server_settings(24 * GB)["shared_buffers"] == "4096MB"
    assert server_settings(24 * GB)["effective_cache_size"] == "12288MB"
    assert server_settings(256 * MB)["effective_cache_size"] == "128MB"


def test_a_containers_memory_limit_bounds_the_memory_counted(tmp_path: Path) -> None:
    unlimited, limited, missing = tmp_path / "v2", tmp_path / "v1", tmp_path / "none"
    unlimited.write_text("max\n")
    limited.write_text(f"{GB}\n")
    assert physical_memory((missing, unlimited)) == physical_memory(())
    assert physical_memory((unlimited, limited)) == min(GB, physical_memory(()))


def _query(url: str, sql: str, *args: str) -> object:
    parsed = make_url(url)

    async def query() -> object:
        conn = await asyncpg.connect(
            host=parsed.query["host"], port=int(str(parsed.query["port"])), user="postgres"
        )
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(query())


def _size(url: str, name: str) -> object:
    return _query(url, "SELECT pg_size_bytes(current_setting($1))", name)


def test_a_new_server_runs_with_its_settings_and_keeps_an_operators_own(tmp_path: Path) -> None:
    wanted = server_settings(physical_memory())
    with embedded_postgres(tmp_path, database="postgres") as url:
        # Shared buffers need the restart that the first start made.
        assert _size(url, "shared_buffers") == _query(
            url, "SELECT pg_size_bytes($1)", wanted["shared_buffers"]
        )
        assert _size(url, "max_wal_size") == 4 * GB
        assert _query(url, "SHOW wal_compression") == "off"
        _query(url, "ALTER SYSTEM SET max_wal_size = '2GB'")
    assert not (tmp_path / "postgres" / "postmaster.pid").exists(), "database left running"
    with embedded_postgres(tmp_path, database="postgres") as url:
        assert _size(url, "max_wal_size") == 2 * GB
    assert not (tmp_path / "postgres" / "postmaster.pid").exists(), "database left running"
