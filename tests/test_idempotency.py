"""Idempotency keys: claim, replay, conflict, and expiry after 24 hours."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.errors import Conflict
from services.idempotency import service as idempotency
from services.users.models import Role


async def test_claim_replay_conflict_and_expiry(session, users):
    owner = (await users.make(Role.buyer)).id
    now = datetime.now(UTC)
    digest = idempotency.request_hash({"a": 1, "b": [1, 2]})
    assert digest == idempotency.request_hash({"b": [1, 2], "a": 1}), "key order is irrelevant"

    first = await idempotency.claim(
        session, owner_id=owner, key="k", scope="checkout", digest=digest, now=now
    )
    assert first.new
    made = uuid.uuid4()
    await idempotency.attach(session, owner_id=owner, key="k", resource_id=made)
    resumed = await idempotency.claim(
        session, owner_id=owner, key="k", scope="checkout", digest=digest, now=now
    )
    assert (resumed.new, resumed.resource_id, resumed.completed) == (False, made, False)
    await idempotency.complete(
        session, owner_id=owner, key="k", status=201, body='{"id": 1, "title": "蜂蜜"}', now=now
    )
    replay = await idempotency.claim(
        session,
        owner_id=owner,
        key="k",
        scope="checkout",
        digest=digest,
        now=now + timedelta(hours=23),
    )
    assert (replay.completed, replay.response_status, replay.response_body) == (
        True,
        201,
        {"id": 1, "title": "蜂蜜"},
    )
    assert json.loads(replay.answer_text()) == {"id": 1, "title": "蜂蜜"}
    assert "蜂蜜" in replay.answer_text()
    with pytest.raises(Conflict):
        await idempotency.claim(
            session,
            owner_id=owner,
            key="k",
            scope="checkout",
            digest=idempotency.request_hash({"a": 2}),
            now=now,
        )
    with pytest.raises(Conflict):
        await idempotency.claim(
            session, owner_id=owner, key="k", scope="refund:x", digest=digest, now=now
        )
    later = await idempotency.claim(
        session,
        owner_id=owner,
        key="k",
        scope="checkout",
        digest=idempotency.request_hash({"a": 2}),
        now=now + timedelta(hours=25),
    )
    assert later.new, "after 24 hours the key starts afresh, whatever the body"
    assert await idempotency.purge_expired(session, now=now + timedelta(hours=50)) == 1
