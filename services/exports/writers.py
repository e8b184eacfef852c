"""The three file formats, each written as rows stream in, never held whole in memory.

CSV is PostgreSQL's own COPY, its output appended to the file as it arrives;
XLSX (XlsxWriter in constant-memory mode) and JSON Lines take batches from a
server-side cursor. Every writer reports how many rows it has written through
`progress`, and the file is hashed (SHA-256) and measured as it is written.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import xlsxwriter
from sqlalchemy.ext.asyncio import AsyncResult

from services.exports.models import ExportFormat

Progress = Callable[[int], Awaitable[None]]

BOM = "\ufeff".encode()
MEDIA_TYPES = {
    ExportFormat.csv: "text/csv; charset=utf-8",
    ExportFormat.xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ExportFormat.jsonl: "application/jsonl",
}
EXTENSIONS = {ExportFormat.csv: "csv", ExportFormat.xlsx: "xlsx", ExportFormat.jsonl: "jsonl"}
# Excel's limit is 1,048,576 rows a sheet, the header included: more rows go on
# further sheets, each with the header again.
XLSX_SHEET_ROWS = 1_048_575
# Lists (failing reasons, village codes) as one CSV or spreadsheet cell.
LIST_SEPARATOR = ";"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Written:
    rows: int
    bytes: int
    sha256: str


class HashingFile:
    """A file being written, with the SHA-256 and size of everything written so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bytes = 0
        self._hash = hashlib.sha256()
        self._file: BinaryIO = path.open("wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.bytes += len(data)

    def finish(self, rows: int) -> Written:
        """Flush to disk: the file is complete before it takes its final name."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return Written(rows, self.bytes, self._hash.hexdigest())

    def close(self) -> None:
        self._file.close()


def _hash_file(path: Path) -> Written:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        os.fsync(handle.fileno())
    return Written(0, size, digest.hexdigest())


# --- CSV ------------------------------------------------------------------------------------


async def write_csv(
    connection: Any,
    sql: str,
    args: Sequence[Any],
    path: Path,
    *,
    bom: bool,
    progress: Progress,
) -> Written:
    """COPY (`sql`) TO STDOUT as CSV with a header, on an asyncpg connection, into `path`.

    Progress counts line ends as the data arrives (a quoted value may hold one, so
    it is an estimate); the row count written in the manifest is the server's own,
    from COPY's status.
    """
    out = HashingFile(path)
    try:
        if bom:
            out.write(BOM)
        lines = 0
        failure: Exception | None = None

        async def append(data: bytes) -> None:
            nonlocal lines, failure
            if failure is not None:
                return
            try:
                out.write(data)
                lines += data.count(b"\n")
                await progress(max(lines - 1, 0))
            except Exception as exc:
                # Raised from here, asyncpg cancels the COPY, and when the server had
                # already sent all of it the connection then hangs for good (asyncpg
                # 0.32): the error waits until COPY ends, the rest is drained unread.
                failure = exc

        status = await connection.copy_from_query(
            sql, *args, output=append, format="csv", header=True
        )
        if failure is not None:
            raise failure
        # "COPY 1234"
        return out.finish(int(str(status).rsplit(" ", 1)[-1]))
    finally:
        out.close()


# --- JSON Lines -----------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _json_lines(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    return b"".join(
        json.dumps(
            dict(zip(columns, row, strict=True)),
            ensure_ascii=False,
            separators=(",", ":"),
            default=_json_value,
        ).encode()
        + b"\n"
        for row in rows
    )


async def write_jsonl(
    result: AsyncResult[Any], columns: Sequence[str], path: Path, *, batch: int, progress: Progress
) -> Written:
    """One JSON object per row and line, UTF-8, in the statement's order."""
    out = HashingFile(path)
    try:
        rows = 0
        async for part in result.partitions(batch):
            # Encoding a batch takes a moment of CPU: off the event loop that serves the API.
            out.write(await asyncio.to_thread(_json_lines, columns, part))
            rows += len(part)
            await progress(rows)
        return out.finish(rows)
    finally:
        out.close()


# --- XLSX -----------------------------------------------------------------------------------


class _Sheets:
    """Rows into a constant-memory workbook, on as many sheets as Excel's limit needs."""

    def __init__(self, path: Path, title: str, columns: Sequence[str], sheet_rows: int) -> None:
        self._workbook = xlsxwriter.Workbook(
            str(path),
            {
                "constant_memory": True,
                "tmpdir": str(path.parent),
                # Values are data, never formulas or links, whatever they look like.
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "strings_to_numbers": False,
            },
        )
        self._title = title[:25]
        self._columns = list(columns)
        self._sheet_rows = sheet_rows
        self._sheets = 0
        self._sheet: Any = None
        self._row = sheet_rows  # full: the first row opens the first sheet

    def _next_sheet(self) -> None:
        self._sheets += 1
        name = self._title if self._sheets == 1 else f"{self._title} {self._sheets}"
        self._sheet = self._workbook.add_worksheet(name)
        bold = self._workbook.add_format({"bold": True})
        for col, name in enumerate(self._columns):
            self._sheet.write_string(0, col, name, bold)
        self._sheet.freeze_panes(1, 0)
        self._row = 0

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        for values in rows:
            if self._row >= self._sheet_rows:
                self._next_sheet()
            self._row += 1
            for col, value in enumerate(values):
                self._cell(self._row, col, value)

    def _cell(self, row: int, col: int, value: Any) -> None:
        sheet = self._sheet
        if value is None:
            return
        if isinstance(value, bool):
            sheet.write_boolean(row, col, value)
        elif isinstance(value, int | float | Decimal):
            # Fen amounts stay exact: Excel's numbers are doubles, exact below 2^53.
            sheet.write_number(row, col, value)
        elif isinstance(value, list | tuple):
            sheet.write_string(row, col, LIST_SEPARATOR.join(str(v) for v in value))
        elif isinstance(value, datetime | date):
            sheet.write_string(row, col, value.isoformat())
        else:
            sheet.write_string(row, col, str(value))

    def close(self) -> None:
        if self._sheets == 0:
            self._next_sheet()  # an empty table is still a sheet with its header
        self._workbook.close()


async def write_xlsx(
    result: AsyncResult[Any],
    columns: Sequence[str],
    path: Path,
    *,
    title: str,
    batch: int,
    progress: Progress,
    sheet_rows: int = XLSX_SHEET_ROWS,
) -> Written:
    sheets = _Sheets(path, title, columns, sheet_rows)
    rows = 0
    async for part in result.partitions(batch):
        await asyncio.to_thread(sheets.add, part)
        rows += len(part)
        await progress(rows)
    # Zipping the workbook reads back what constant-memory mode spilled to disk.
    await asyncio.to_thread(sheets.close)
    written = await asyncio.to_thread(_hash_file, path)
    return Written(rows, written.bytes, written.sha256)
