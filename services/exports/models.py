"""Export jobs: what was asked, by whom, how far the job is, and the file's manifest."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CHAR, BigInteger, ForeignKey, Index, SmallInteger, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, Timestamps, UUIDPrimaryKey, text_enum


class ExportTable(enum.StrEnum):
    household_year = "household_year"
    village = "village"
    county = "county"


class ExportFormat(enum.StrEnum):
    csv = "csv"
    xlsx = "xlsx"
    jsonl = "jsonl"


class ExportStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class Export(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "exports"
    __table_args__ = (Index("ix_exports_requested_by_created_at", "requested_by", "created_at"),)

    kind: Mapped[ExportTable] = mapped_column(text_enum(ExportTable, "export_table"))
    format: Mapped[ExportFormat] = mapped_column(text_enum(ExportFormat, "export_format"))
    region_code: Mapped[str] = mapped_column(CHAR(12))
    year: Mapped[int] = mapped_column(SmallInteger)
    include_names: Mapped[bool] = mapped_column(default=False, server_default="false")
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, comment="Everything asked, as given.")
    status: Mapped[ExportStatus] = mapped_column(
        text_enum(ExportStatus, "export_status"),
        default=ExportStatus.queued,
        server_default=ExportStatus.queued.value,
    )
    rows_expected: Mapped[int | None] = mapped_column(BigInteger)
    rows_written: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    requested_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    file_name: Mapped[str | None] = mapped_column(String(200))
    byte_size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(CHAR(64))
    error: Mapped[str | None] = mapped_column(Text)
