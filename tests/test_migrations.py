"""Migrations are the only way the schema is made; they must match the models both ways."""

from __future__ import annotations

import uuid

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from services.db import create_engine
from services.models import metadata
from services.schema import current_revision, downgrade, head_revision, upgrade
from tests.conftest import create_database, drop_database


async def test_models_and_migrations_agree(engine):
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(
                    sync, opts={"compare_type": True, "compare_server_default": True}
                ),
                metadata,
            )
        )
    assert diff == [], f"models and migrations differ: {diff}"


async def test_empty_database_migrates_up_to_head_and_back_down(server_url):
    name = f"marketplace_mig_{uuid.uuid4().hex[:10]}"
    url = await create_database(server_url, name)
    engine = create_engine(url)
    try:
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
        await downgrade(engine, "base")
        assert await current_revision(engine) is None
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        assert set(tables) <= {"alembic_version"}
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
        await drop_database(server_url, name)
