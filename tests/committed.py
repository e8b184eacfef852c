"""An app on a database of its own, where transactions really commit.

For what the per-test rollback of the usual fixtures cannot show: races between
real connections, progress written on a connection aside, a command run in a
process of its own. The database is created, migrated and dropped around the test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from app.main import create_app
from app.settings import Settings
from services.db import create_engine
from services.schema import upgrade
from services.users.models import Role
from tests.conftest import JWT_SECRET, Users, create_database, drop_database
from tests.factories import PII_KEY


class CommittingUsers(Users):
    """Accounts committed at once, for an app that reads them on connections of its own."""

    async def make(self, role: Role = Role.buyer, **fields: object) -> Any:
        user = await super().make(role, **fields)
        await self.session.commit()
        return user


@dataclass(frozen=True, slots=True)
class CommittedApp:
    url: str
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def settings(self) -> Settings:
        settings: Settings = self.app.state.settings
        return settings


@asynccontextmanager
async def committed_app(
    server_url: str, data_dir: Path, *, prefix: str, **settings: Any
) -> AsyncIterator[CommittedApp]:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = await create_database(server_url, name)
    try:
        engine = create_engine(url)
        await upgrade(engine)
        await engine.dispose()
        app = create_app(
            Settings(
                database_url=url,
                jwt_secret=JWT_SECRET,
                pii_key=PII_KEY.decode(),
                data_dir=data_dir,
                log_level="WARNING",
                run_worker_in_process=False,
                catalogue_cache_seconds=0,
                **settings,
            )
        )
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://committed"
            ) as client:
                yield CommittedApp(url, app, client)
        finally:
            await app.state.engine.dispose()
    finally:
        await drop_database(server_url, name)


async def wait_for_a_lock_wait(factory: Any, failure: str, *, waiting: int = 1) -> None:
    """Until `waiting` other backends of this database wait for a lock (a row another
    holds)."""
    probe = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    async with factory() as session:
        for _ in range(1_000):
            found = await session.scalar(probe)
            # A transaction reads pg_stat_activity once and keeps that copy: each probe
            # ends its own, or it would never see a wait that began after the first.
            await session.rollback()
            if found >= waiting:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(failure)
