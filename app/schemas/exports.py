"""Export jobs: the request, the export with its progress, and the manifest of its file."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.schemas.common import RequestModel
from app.schemas.regions import RegionCode

TableName = Literal["household_year", "village", "county"]
FormatName = Literal["csv", "xlsx", "jsonl"]
StatusName = Literal["queued", "running", "done", "failed"]


class ExportIn(RequestModel):
    table: TableName = Field(
        description="`household_year`: one row per household; `village`, `county`: indicators."
    )
    format: FormatName = Field(description="`csv` (UTF-8), `xlsx` or `jsonl` (JSON Lines).")
    region: RegionCode = Field(description="Any level; officers: within their county.")
    year: int = Field(ge=2000, le=2100, description="Assessment year; it must have thresholds.")
    include_names: bool = Field(
        default=False,
        description="Household ids and heads' names instead of pseudonyms: officers of the "
        "region's county only, and audited.",
    )
    bom: bool = Field(
        default=False, description="Start the CSV file with a UTF-8 byte order mark (for Excel)."
    )


class ManifestOut(BaseModel):
    rows: int
    sha256: str = Field(description="SHA-256 of the file, hex; also the download's ETag.")
    bytes: int
    file_name: str
    media_type: str
    parameters: dict[str, Any] = Field(description="Everything asked, as given.")
    requested_by: uuid.UUID
    requested_at: datetime
    finished_at: datetime


class ExportOut(BaseModel):
    id: uuid.UUID
    table: TableName
    format: FormatName
    region: str
    year: int
    include_names: bool
    bom: bool
    status: StatusName = Field(
        description="`queued` (also again after a failed attempt that will be retried, with "
        "its `error`), `running`, `done`, or `failed` for good."
    )
    rows_written: int
    rows_expected: int | None = Field(description="Counted before the file is written.")
    error: str | None
    manifest: ManifestOut | None = Field(description="Once done.")
