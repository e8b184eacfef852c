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

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.db import driver_connection
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

    def answer_text(self) -> str:
        """The kept answer as JSON text, to send again (PostgreSQL's jsonb keeps no spacing
        or key order, so a replay's text may differ from the first; its value does not)."""
        assert self.response_body is not None
        return json.dumps(self.response_body, ensure_ascii=False, separators=(",", ":"))


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
    inserted = await (await driver_connection(session)).fetchval(
        _CLAIM, owner_id, key, scope, digest, now, now - RETENTION
    )
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
    """Name what the key's request made, before its answer is known (a Stripe checkout)."""
    await (await driver_connection(session)).execute(_ATTACH, owner_id, key, resource_id)


async def complete(
    session: AsyncSession,
    *,
    owner_id: uuid.UUID,
    key: str,
    status: int,
    body: str,
    now: datetime,
    resource_id: uuid.UUID | None = None,
) -> None:
    """Keep the first answer (`body`: its JSON text, as sent); with `resource_id`, attach
    it in the same statement."""
    await (await driver_connection(session)).execute(
        _COMPLETE, owner_id, key, status, body, now, resource_id
    )


# Fixed SQL on the driver: every checkout runs these, and building them per call
# with the ORM cost more Python than the rest of the claim.
_CLAIM = """
INSERT INTO idempotency_keys AS k (owner_id, key, scope, request_hash, created_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (owner_id, key) DO UPDATE
   SET scope = excluded.scope, request_hash = excluded.request_hash,
       created_at = excluded.created_at, resource_id = NULL, response_status = NULL,
       response_body = NULL, completed_at = NULL
 WHERE k.created_at < $6
RETURNING k.key
"""
_ATTACH = """
UPDATE idempotency_keys SET resource_id = $3 WHERE owner_id = $1 AND key = $2
"""


def complete_sql(first: int, *, only_if: str | None = None) -> str:
    """`complete`'s UPDATE with its parameters numbered from `first` ($first: owner,
    then key, status, body as JSON text, time, resource id), for a statement that keeps
    a key's answer together with other work (checkout's order, a Stripe binding).

    A NULL status names the resource only; a NULL resource keeps the one named;
    `only_if`, a condition of the enclosing statement, gates the whole update.
    """
    owner, key, status, body, at, resource = (f"${first + i}" for i in range(6))
    gate = f" AND {only_if}" if only_if else ""
    return (
        f"UPDATE idempotency_keys SET response_status = {status}::smallint, "  # noqa: S608 (numbers)
        f"response_body = {body}::jsonb, completed_at = {at}::timestamptz, "
        f"resource_id = coalesce({resource}::uuid, resource_id) "
        f"WHERE owner_id = {owner}::uuid AND key = {key}::text AND response_status IS NULL"
        f"{gate}"
    )


_COMPLETE = complete_sql(1)


async def purge_expired(session: AsyncSession, *, now: datetime) -> int:
    result = await session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.created_at < now - RETENTION)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
