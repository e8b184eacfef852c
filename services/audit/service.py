"""Record an audited action in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.audit.models import AuditEvent
from services.users.models import User


async def record(
    session: AsyncSession,
    actor: User | None,
    action: str,
    subject_type: str,
    subject_ids: Iterable[str] | str | None,
    **details: Any,
) -> None:
    ids = (
        [subject_ids] if isinstance(subject_ids, str) or subject_ids is None else list(subject_ids)
    )
    if not ids:
        return
    await session.execute(
        insert(AuditEvent),
        [
            {
                "actor_id": actor.id if actor else None,
                "actor_role": actor.role.value if actor else None,
                "action": action,
                "subject_type": subject_type,
                "subject_id": subject_id,
                "details": details,
            }
            for subject_id in ids
        ],
    )
