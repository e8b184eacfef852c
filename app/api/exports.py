"""Export jobs: ask for a table as a file, watch its progress, download it when done."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import FileResponse

from app.deps import SessionDep, SettingsDep, now, require
from app.schemas.exports import ExportIn, ExportOut, ManifestOut
from app.schemas.problem import problem_responses
from app.settings import Settings
from services.exports import service
from services.exports.models import Export, ExportFormat, ExportStatus, ExportTable
from services.exports.runner import ExportConfig
from services.exports.writers import MEDIA_TYPES
from services.users.models import Role, User

router = APIRouter(prefix="/v1/exports", tags=["exports"])
Officer = Annotated[User, Depends(require(Role.officer, Role.admin))]


def export_config(settings: Settings) -> ExportConfig:
    """Where export jobs of this process write, and the key of their pseudonyms."""
    return ExportConfig(
        directory=settings.export_path,
        pseudonym_key=lambda: settings.export_pseudonym_secret,
    )


def _out(export: Export) -> ExportOut:
    manifest = None
    if export.status is ExportStatus.done:
        assert export.file_name and export.sha256 and export.finished_at
        manifest = ManifestOut(
            rows=export.rows_written,
            sha256=export.sha256,
            bytes=export.byte_size or 0,
            file_name=export.file_name,
            media_type=service.media_type(export),
            parameters=export.parameters,
            requested_by=export.requested_by,
            requested_at=export.created_at,
            finished_at=export.finished_at,
        )
    return ExportOut(
        id=export.id,
        table=export.kind.value,
        format=export.format.value,
        region=export.region_code,
        year=export.year,
        include_names=export.include_names,
        bom=bool(export.parameters.get("bom", False)),
        status=export.status.value,
        rows_written=export.rows_written,
        rows_expected=export.rows_expected,
        error=export.error,
        manifest=manifest,
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExportOut,
    responses=problem_responses(400, 401, 403, 404, 413, 422),
)
async def request_export(
    body: ExportIn, session: SessionDep, actor: Officer, response: Response
) -> ExportOut:
    """Queue an export; follow `Location` to watch it. Names are audited."""
    export = await service.request_export(
        session,
        actor,
        service.ExportRequest(
            table=ExportTable(body.table),
            format=ExportFormat(body.format),
            region=body.region,
            year=body.year,
            include_names=body.include_names,
            bom=body.bom,
        ),
        now=now(),
    )
    response.headers["Location"] = f"{router.prefix}/{export.id}"
    return _out(export)


@router.get("/{export_id}", response_model=ExportOut, responses=problem_responses(401, 403, 404))
async def read_export(session: SessionDep, actor: Officer, export_id: uuid.UUID) -> ExportOut:
    """Status, progress and, once done, the manifest of the file."""
    return _out(await service.get_export(session, actor, export_id))


@router.get(
    "/{export_id}/download",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file; `ETag` is its SHA-256.",
            "content": {media: {} for media in MEDIA_TYPES.values()},
        },
        **problem_responses(401, 403, 404, 409),
    },
)
async def download_export(
    session: SessionDep, settings: SettingsDep, actor: Officer, export_id: uuid.UUID
) -> FileResponse:
    """The file of a finished export; 409 while it is still being written."""
    file = await service.download(session, actor, export_id, settings.export_path)
    return FileResponse(
        file.path,
        media_type=file.media_type,
        filename=file.file_name,
        headers={"ETag": f'"{file.sha256}"'},
    )
