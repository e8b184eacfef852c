"""Apply and inspect migrations from code: the CLI, readiness checks and tests use it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Enum
from sqlalchemy.dialects.postgresql import DOMAIN
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeEngine

import migrations

MIGRATIONS_DIR = Path(migrations.__file__).parent


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def compare_type(
    context: MigrationContext,
    inspected_column: object,
    metadata_column: object,
    inspected_type: TypeEngine[object],
    metadata_type: TypeEngine[object],
) -> bool | None:
    """Alembic's type comparison, knowing that a `text_enum` column is typed by its domain.

    False (no difference) for an enum whose column is the domain of its name; anything
    else is left to Alembic (None). A reflected domain carries neither its base type's
    length nor its constraint: tests/test_migrations.py compares those with the model.
    """
    if isinstance(metadata_type, Enum) and isinstance(inspected_type, DOMAIN):
        return inspected_type.name != metadata_type.name
    return None


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    await _run(engine, lambda config: command.upgrade(config, revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    await _run(engine, lambda config: command.downgrade(config, revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


async def _run(engine: AsyncEngine, action: object) -> None:
    def apply(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        action(config)  # type: ignore[operator]

    async with engine.begin() as conn:
        # One migrator at a time: several API workers may start together.
        await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7423110001)")
        await conn.run_sync(apply)
