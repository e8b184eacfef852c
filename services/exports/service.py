"""Export requests: who may ask for which table, the audited request for names, the file.

An export is asked for in a request and written by a job (`services.exports.runner`)
enqueued in the same transaction. Exports are pseudonymous unless an officer of
the region's county asks for names, and that request is audited with the export
(DESIGN rule 7). An export is visible to whoever asked for it, and pseudonymous
ones to admins too; to anyone else it does not exist.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from services.assessment.scope import scope_of
from services.assessment.thresholds import ensure_begun, thresholds_for
from services.audit import service as audit
from services.errors import Conflict, Forbidden, Invalid, NotFound
from services.exports.models import Export, ExportFormat, ExportStatus, ExportTable
from services.exports.sources import has_personal_data
from services.exports.writers import MEDIA_TYPES
from services.jobs.service import enqueue
from services.users.models import Role, User

EXPORT_JOB = "exports.run"
NAMES_ACTION = "export.names"


@dataclass(frozen=True, slots=True)
class ExportRequest:
    table: ExportTable
    format: ExportFormat
    region: str
    year: int
    include_names: bool = False
    bom: bool = False

    def parameters(self) -> dict[str, object]:
        """Everything asked, as given: kept with the export and shown in its manifest."""
        return {
            "table": self.table.value,
            "format": self.format.value,
            "region": self.region,
            "year": self.year,
            "include_names": self.include_names,
            "bom": self.bom,
        }


async def request_export(
    session: AsyncSession, actor: User, request: ExportRequest, *, now: datetime
) -> Export:
    """Record the export and enqueue its job; the names request is audited with it."""
    # Officers of the region's county or admins (another county: Forbidden).
    scope = await scope_of(session, actor, request.region)
    if request.include_names:
        if actor.role is not Role.officer:
            raise Forbidden(
                "Only an officer of the county may export names; admins export pseudonyms.",
                field="include_names",
            )
        if not has_personal_data(request.table):
            raise Invalid(f"The {request.table.value} table holds no names.", field="include_names")
    if request.bom and request.format is not ExportFormat.csv:
        raise Invalid("A byte order mark is written in CSV files only.", field="bom")
    try:
        await thresholds_for(session, request.year)
    except NotFound as exc:
        # A field of the body, not a missing resource of this URL.
        raise Invalid(exc.detail, field="year") from exc
    if request.table is not ExportTable.household_year:
        ensure_begun(request.year, now)
    export = Export(
        kind=request.table,
        format=request.format,
        region_code=scope.code,
        year=request.year,
        include_names=request.include_names,
        parameters=request.parameters(),
        requested_by=actor.id,
    )
    session.add(export)
    await session.flush()
    if request.include_names:
        await audit.record(
            session,
            actor,
            NAMES_ACTION,
            "export",
            str(export.id),
            **request.parameters(),
        )
    # The export is run once at a time: the job's key is the export.
    await enqueue(session, EXPORT_JOB, {"export_id": str(export.id)}, dedupe_key=str(export.id))
    await session.refresh(export)
    return export


def _visible(export: Export, actor: User) -> bool:
    if export.requested_by == actor.id:
        return True
    return actor.role is Role.admin and not export.include_names


async def get_export(session: AsyncSession, actor: User, export_id: uuid.UUID) -> Export:
    export = await session.get(Export, export_id)
    if export is None or not _visible(export, actor):
        raise NotFound("No such export.")
    return export


@dataclass(frozen=True, slots=True)
class Download:
    path: Path
    file_name: str
    media_type: str
    sha256: str


async def download(
    session: AsyncSession, actor: User, export_id: uuid.UUID, directory: Path
) -> Download:
    """The finished file of an export; Conflict while it is being written."""
    export = await get_export(session, actor, export_id)
    if export.status is not ExportStatus.done or export.file_name is None or not export.sha256:
        raise Conflict(
            f"The export is {export.status.value}; its file can be downloaded once it is done.",
            reason="export-not-done",
        )
    path = directory / export.file_name
    if not path.is_file():
        raise NotFound(
            "The file of this export is no longer kept on this server.", reason="export-file-gone"
        )
    return Download(path, export.file_name, MEDIA_TYPES[export.format], export.sha256)


def media_type(export: Export) -> str:
    return MEDIA_TYPES[export.format]
