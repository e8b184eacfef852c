"""Opaque keyset cursors: stable while rows are added, unlike offsets."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from services.errors import Invalid

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(kind: str, key: list[Any]) -> str:
    raw = json.dumps({"k": kind, "v": key}, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, *types: Callable[[Any], Any]) -> list[Any]:
    """The key a cursor carries, each part converted by `types`.

    A cursor from another listing or sort order, or tampered with, is refused.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise Invalid("The cursor is not valid.", field="cursor") from exc
    if not isinstance(data, dict) or data.get("k") != kind or not isinstance(data.get("v"), list):
        raise Invalid("The cursor belongs to another listing or sort order.", field="cursor")
    values = data["v"]
    if len(values) != len(types):
        raise Invalid("The cursor is not valid.", field="cursor")
    try:
        return [convert(value) for convert, value in zip(types, values, strict=True)]
    except (TypeError, ValueError) as exc:
        raise Invalid("The cursor is not valid.", field="cursor") from exc


async def page_of(
    session: AsyncSession,
    stmt: Select[*tuple[Any, ...]],
    *,
    limit: int,
    kind: str,
    key: Callable[[Any], list[Any]],
    scalars: bool = True,
) -> Page[Any]:
    """Run a keyset query for one page: fetch one row more to know whether more follow."""
    result = await session.execute(stmt.limit(limit + 1))
    rows = list(result.scalars().all() if scalars else result.all())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(kind, key(rows[-1])) if more else None)


def _plain(value: Any) -> Any:
    """A key value as JSON can carry it (and `decode_cursor` can convert it back)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


_DECODERS: dict[type, Callable[[Any], Any]] = {
    datetime: datetime.fromisoformat,
    uuid.UUID: uuid.UUID,
    str: str,
    int: int,
}


async def keyset_page(
    session: AsyncSession,
    stmt: Select[*tuple[Any, ...]],
    *,
    order: Sequence[InstrumentedAttribute[Any]],
    kind: str,
    cursor: str | None,
    limit: int,
    descending: bool = False,
) -> Page[Any]:
    """One page of entities ordered by `order` (unique together), after `cursor`.

    The cursor carries the last row's values of those columns; the next page starts
    strictly after them, which keeps paging exact while rows are added.
    """
    if cursor:
        types = [_DECODERS[column.type.python_type] for column in order]
        values = decode_cursor(cursor, kind, *types)
        here = tuple_(*order)
        stmt = stmt.where(here < tuple_(*values) if descending else here > tuple_(*values))
    stmt = stmt.order_by(*(column.desc() if descending else column.asc() for column in order))
    return await page_of(
        session,
        stmt,
        limit=limit,
        kind=kind,
        key=lambda row: [_plain(getattr(row, column.key)) for column in order],
    )
