"""Signed access tokens (JWT, HS256)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from services.errors import Unauthenticated

ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: uuid.UUID
    role: str
    expires_at: datetime


def issue_token(
    *, user_id: uuid.UUID, role: str, secret: str, ttl: timedelta, now: datetime
) -> str:
    payload = {
        "sub": str(user_id),
        "role": role,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def read_token(token: str, *, secret: str) -> TokenClaims:
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "iat"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("The access token has expired.", reason="token-expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthenticated("The access token is not valid.", reason="token-invalid") from exc
    try:
        user_id = uuid.UUID(str(payload["sub"]))
    except ValueError as exc:
        raise Unauthenticated("The access token is not valid.", reason="token-invalid") from exc
    return TokenClaims(
        user_id=user_id,
        role=str(payload.get("role", "")),
        expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
    )
