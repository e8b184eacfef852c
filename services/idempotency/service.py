"""Claim, resume and complete idempotency keys.

The first request with a key inserts its row; a concurrent request with the same
key blocks on the primary key until the first commits, then finds the row: that
is what makes twenty simultaneous retries create one order. A different body
under the same key is a conflict. Keys expire after a retention period (24 h).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.errors import Conflict
from services.idempotency.models import IdempotencyKey

RETENTION = timedelta(hours=24)


def request_hash(body: Any) -> str:
    """SHA-256 of the body in canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Claim:
    """The state of a key after claiming it."""

    new: bool
    resource_id: uuid.UUID | None = None
    response_status: int | None = None
    response_body: dict[str, Any] | None = None

    @property
    def completed(self) -> bool:
        return self.response_status is not None


async def claim(
    session: AsyncSession,
    *,
    owner_id: uuid.UUID,
    key: str,
    scope: str,
    digest: str,
    now: datetime,
) -> Claim:
    # One statement: insert the key, or take over a row whose 24 hours are past.
    stmt = insert(IdempotencyKey).values(
        owner_id=owner_id, key=key, scope=scope, request_hash=digest, created_at=now
    )
    inserted = (
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[IdempotencyKey.owner_id, IdempotencyKey.key],
                set_={
                    "scope": stmt.excluded.scope,
                    "request_hash": stmt.excluded.request_hash,
                    "created_at": stmt.excluded.created_at,
                    "resource_id": None,
                    "response_status": None,
                    "response_body": None,
                    "completed_at": None,
                },
                where=IdempotencyKey.created_at < now - RETENTION,
            ).returning(IdempotencyKey.key)
        )
    ).first()
    if inserted is not None:
        return Claim(new=True)
    row = (
        await session.scalars(
            select(IdempotencyKey)
            .where(IdempotencyKey.owner_id == owner_id, IdempotencyKey.key == key)
            .execution_options(populate_existing=True)
        )
    ).one()
    if row.scope != scope or row.request_hash != digest:
        raise Conflict(
            "This Idempotency-Key was used with a different request.",
            field="Idempotency-Key",
            reason="idempotency-key-reused",
        )
    return Claim(
        new=False,
        resource_id=row.resource_id,
        response_status=row.response_status,
        response_body=row.response_body,
    )


async def attach(
    session: AsyncSession, *, owner_id: uuid.UUID, key: str, resource_id: uuid.UUID
) -> None:
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.owner_id == owner_id, IdempotencyKey.key == key)
        .values(resource_id=resource_id)
    )


async def complete(
    session: AsyncSession,
    *,
    owner_id: uuid.UUID,
    key: str,
    status: int,
    body: dict[str, Any],
    now: datetime,
    resource_id: uuid.UUID | None = None,
) -> None:
    """Keep the first answer; with `resource_id`, attach it in the same statement."""
    values: dict[str, Any] = {
        "response_status": status,
        "response_body": body,
        "completed_at": now,
    }
    if resource_id is not None:
        values["resource_id"] = resource_id
    await session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.owner_id == owner_id,
            IdempotencyKey.key == key,
            IdempotencyKey.response_status.is_(None),
        )
        .values(values)
    )


async def purge_expired(session: AsyncSession, *, now: datetime) -> int:
    result = await session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.created_at < now - RETENTION)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
