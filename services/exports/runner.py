"""Running an export: the job that writes the file, with progress others can watch.

The job's own transaction lives as long as the export, and what it writes is seen
only when it commits; so the status `running`, the expected and written row counts
and a failure are written in short transactions of their own on another
connection (`Progress`). The handler's transaction leaves the export row alone
until the end, when it writes the manifest with the status `done`: nothing waits
on anything.

The file is written in a work folder of its own and takes its final name with
one `os.replace` once complete, just before the manifest: a worker killed midway
leaves no half file behind a manifest, and the job, run again, starts over.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ClauseElement, func, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler

from services.assessment.scope import scope_of
from services.assessment.thresholds import thresholds_for
from services.db import driver_connection
from services.errors import DomainError, Forbidden
from services.exports import sources, writers
from services.exports.models import Export, ExportFormat, ExportStatus
from services.exports.service import EXPORT_JOB
from services.jobs.service import on_last_attempt
from services.users.models import Role
from services.users.service import get_active_user

logger = logging.getLogger(__name__)

_ERROR_CHARS = 2000


@dataclass(frozen=True, slots=True)
class ExportConfig:
    """Process configuration of export jobs, set by the delivery layer from its settings."""

    directory: Path
    # Read when the first export runs, not when a process that never exports starts
    # (generating the key has the side effect of writing it to the data folder).
    pseudonym_key: Callable[[], bytes]
    progress_every: int = 10_000  # rows between two progress writes
    batch_rows: int = 2_000  # rows fetched from the cursor at a time (XLSX, JSON Lines)


class Progress:
    """The export's status and row counts, each write committed at once on its own connection."""

    def __init__(self, engine: AsyncEngine, export_id: uuid.UUID, *, every: int) -> None:
        self._engine = engine
        self._export_id = export_id
        self._every = max(every, 1)
        self._reported = 0
        self._expected: int | None = None

    async def _write(self, **values: Any) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(Export).where(Export.id == self._export_id).values(**values)
            )

    async def start(self, expected: int) -> None:
        self._expected = expected
        self._reported = 0
        await self._write(
            status=ExportStatus.running,
            started_at=func.now(),
            rows_expected=expected,
            rows_written=0,
            error=None,
        )

    async def __call__(self, rows: int) -> None:
        if rows - self._reported < self._every:
            return
        self._reported = rows
        # The CSV count is an estimate until COPY says; never more than announced.
        shown = rows if self._expected is None else min(rows, self._expected)
        await self._write(rows_written=shown)

    async def fail(self, error: str, *, final: bool) -> None:
        """Record a failed attempt: `failed` after the last one, else `queued` for the retry."""
        status = ExportStatus.failed if final else ExportStatus.queued
        await self._write(status=status, error=error[-_ERROR_CHARS:])


async def _engine_of(session: AsyncSession) -> AsyncEngine:
    return (await session.connection()).engine


def work_folder(config: ExportConfig, export_id: uuid.UUID) -> Path:
    """Where an export's file is written until it is complete: its own, named by its id."""
    return config.directory / f".work-{export_id}"


def file_name_of(export: Export) -> str:
    extension = writers.EXTENSIONS[export.format]
    return f"{export.kind.value}-{export.region_code}-{export.year}-{export.id}.{extension}"


def positional(statement: ClauseElement, dialect: Dialect) -> tuple[str, list[Any]]:
    """The statement as asyncpg takes it: `$n` placeholders and their values in order."""
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler) and compiled.positional
    params = compiled.construct_params()
    # What SQLAlchemy would do to the values before asyncpg sees them (nothing, for
    # the plain types of these statements).
    processors = compiled._bind_processors
    values = []
    for name in compiled.positiontup or ():
        process = processors.get(name)
        values.append(process(params[name]) if callable(process) else params[name])
    return compiled.string, values


async def run_export(session: AsyncSession, config: ExportConfig, export_id: uuid.UUID) -> None:
    """Write one export's file and manifest; safe to run again after any failure."""
    export = await session.get(Export, export_id)
    if export is None:
        logger.warning("export to run does not exist", extra={"export_id": str(export_id)})
        return
    if export.status is ExportStatus.done:
        return  # the job ran to its end before; its commit is what was lost
    final = await on_last_attempt(session, EXPORT_JOB, str(export_id))
    progress = Progress(await _engine_of(session), export_id, every=config.progress_every)
    name = file_name_of(export)
    work = work_folder(config, export.id)
    try:
        # Whatever a killed attempt left behind is thrown away: this one starts over.
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        written = await _write(session, config, export, work / name, progress)
        os.replace(work / name, config.directory / name)
    except DomainError as exc:
        # The requester lost access, the thresholds went: running again cannot help.
        # Said in this transaction, which commits with the job's end.
        logger.info("export refused", extra={"export_id": str(export_id), "error": exc.detail})
        await session.execute(
            update(Export)
            .where(Export.id == export_id)
            .values(status=ExportStatus.failed, error=exc.detail, finished_at=datetime.now(UTC))
        )
        return
    except Exception as exc:
        try:
            await progress.fail(f"{type(exc).__name__}: {exc}", final=final)
        except Exception:
            logger.exception(
                "could not record a failed export", extra={"export_id": str(export_id)}
            )
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    await session.execute(
        update(Export)
        .where(Export.id == export_id)
        .values(
            status=ExportStatus.done,
            rows_expected=written.rows,
            rows_written=written.rows,
            finished_at=datetime.now(UTC),
            file_name=name,
            byte_size=written.bytes,
            sha256=written.sha256,
            error=None,
        )
    )
    logger.info(
        "export written",
        extra={"export_id": str(export_id), "rows": written.rows, "bytes": written.bytes},
    )


async def _write(
    session: AsyncSession, config: ExportConfig, export: Export, path: Path, progress: Progress
) -> writers.Written:
    # Checked again as the job runs: access may have ended since the request.
    actor = await get_active_user(session, export.requested_by)
    if actor is None:
        raise Forbidden("The account that asked for this export is no longer active.")
    scope = await scope_of(session, actor, export.region_code)
    if export.include_names and actor.role is not Role.officer:
        raise Forbidden("Only an officer of the county may export names.")
    threshold = await thresholds_for(session, export.year)
    # As of the request: a retried job writes the same figures.
    now = export.created_at
    expected = await sources.expected_rows(
        session, export.kind, scope, export.year, threshold, now=now
    )
    await progress.start(expected)
    statement = sources.export_statement(
        export.kind,
        scope,
        export.year,
        threshold,
        now=now,
        include_names=export.include_names,
        key=config.pseudonym_key(),
    )
    if export.format is ExportFormat.csv:
        return await _write_csv(session, statement, path, export, progress)
    result = await session.stream(statement.execution_options(yield_per=config.batch_rows))
    columns = list(result.keys())
    if export.format is ExportFormat.xlsx:
        return await writers.write_xlsx(
            result,
            columns,
            path,
            title=export.kind.value,
            batch=config.batch_rows,
            progress=progress,
        )
    return await writers.write_jsonl(
        result, columns, path, batch=config.batch_rows, progress=progress
    )


async def _write_csv(
    session: AsyncSession,
    statement: Any,
    path: Path,
    export: Export,
    progress: Progress,
) -> writers.Written:
    connection = await session.connection()
    raw = await driver_connection(session)
    sql, args = positional(statement, connection.dialect)
    types = await _result_types(raw, sql)
    flat = sources.flat_statement(statement, types, free_text=sources.TABLES[export.kind].free_text)
    sql, args = positional(flat, connection.dialect)
    bom = bool(export.parameters.get("bom", False))
    return await writers.write_csv(raw, sql, args, path, bom=bom, progress=progress)


async def _result_types(raw: Any, sql: str) -> Sequence[tuple[str, str, str]]:
    """(column, type name, type kind) of a statement's result, prepared but not run."""
    prepared = await raw.prepare(sql)
    return [(a.name, a.type.name, a.type.kind) for a in prepared.get_attributes()]
