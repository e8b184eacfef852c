"""Migrations are the only way the schema is made; they must match the models both ways."""

from __future__ import annotations

import re
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Enum, inspect
from sqlalchemy.exc import IntegrityError

from services.db import create_engine
from services.models import metadata
from services.schema import compare_type, current_revision, downgrade, head_revision, upgrade
from tests.conftest import create_database, drop_database


async def test_models_and_migrations_agree(engine):
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(
                    sync, opts={"compare_type": compare_type, "compare_server_default": True}
                ),
                metadata,
            )
        )
    assert diff == [], f"models and migrations differ: {diff}"


async def test_each_enum_column_is_typed_by_its_domain_of_the_models_values(engine):
    """Alembic compares neither a domain's constraint nor its base type's length: here."""
    wanted = {
        (table.name, column.name): column.type
        for table in metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, Enum)
    }
    async with engine.connect() as conn:
        rows = (
            await conn.exec_driver_sql(
                """
                SELECT c.table_name, c.column_name, c.domain_name, c.character_maximum_length,
                       (SELECT array_agg(pg_get_constraintdef(k.oid))
                          FROM pg_constraint k WHERE k.contypid = t.oid) AS checks
                  FROM information_schema.columns c
                  JOIN pg_type t ON t.typname = c.domain_name AND t.typtype = 'd'
                 WHERE c.table_schema = 'public' AND c.domain_name IS NOT NULL
                """
            )
        ).all()
    found = {(row.table_name, row.column_name): row for row in rows}
    assert set(found) == set(wanted)
    for place, kind in wanted.items():
        row = found[place]
        assert (row.domain_name, row.character_maximum_length) == (kind.name, kind.length), place
        [check] = row.checks
        listed = re.findall(r"'((?:[^']|'')*)'::", check)
        assert listed == list(kind.enums), (place, check)


async def test_an_enum_column_refuses_a_value_outside_its_list(engine):
    async with engine.connect() as conn:
        cast = "SELECT CAST('{}' AS order_status)"
        assert (await conn.exec_driver_sql(cast.format("shipped"))).scalar() == "shipped"
        with pytest.raises(IntegrityError, match="ck_order_status"):
            await conn.exec_driver_sql(cast.format("lost"))


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
