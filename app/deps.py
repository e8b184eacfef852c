"""Request-scoped dependencies: the unit of work, the caller, and role checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.settings import Settings
from services.errors import DomainError, Unauthenticated
from services.users import access
from services.users.models import Role, User
from services.users.service import get_active_user, read_active_user
from services.users.tokens import TokenClaims, TokenReader


async def get_settings(request: Request) -> Settings:
    # async, though it awaits nothing: FastAPI runs a plain `def` dependency in its
    # thread pool, a thread hop on every request for a lookup.
    settings: Settings = request.app.state.settings
    return settings


async def _unit_of_work(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, else rolled back."""
    async with request.app.state.sessionmaker() as session:
        try:
            yield session
        except DomainError as exc:
            if exc.keep_changes:
                await session.commit()
            else:
                await session.rollback()
            raise
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


async def get_token_reader(request: Request) -> TokenReader:
    # async for the reason get_settings is: no thread hop for a lookup.
    reader: TokenReader = request.app.state.tokens
    return reader


# scope="function": the commit happens before the answer is sent, so a client
# never hears of a change that did not reach the database.
SessionDep = Annotated[AsyncSession, Depends(_unit_of_work, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TokensDep = Annotated[TokenReader, Depends(get_token_reader)]

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /v1/auth/token.")


async def current_user(
    session: SessionDep,
    tokens: TokensDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    claims = _claims(tokens, credentials)
    return _known(await get_active_user(session, claims.user_id))


def _claims(tokens: TokenReader, credentials: HTTPAuthorizationCredentials | None) -> TokenClaims:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated(
            "Send an access token as `Authorization: Bearer <token>`.", reason="unauthenticated"
        )
    return tokens.read(credentials.credentials, now=now())


def _known(user: User | None) -> User:
    if user is None:
        raise Unauthenticated(
            "The account of this token no longer exists or is disabled.", reason="token-invalid"
        )
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def optional_user(
    session: SessionDep,
    tokens: TokensDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User | None:
    """The caller when a token is sent (a bad token is still a 401), else None."""
    if credentials is None:
        return None
    return await current_user(session, tokens, credentials)


MaybeUser = Annotated[User | None, Depends(optional_user)]


async def detached_user(
    request: Request,
    tokens: TokensDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The caller, read by one statement outside any transaction.

    For routes that run their own transactions around a call to Stripe: no
    connection stays checked out (idle in transaction) while Stripe answers.
    """
    claims = _claims(tokens, credentials)
    user = await read_active_user(request.app.state.sessionmaker, claims.user_id)
    return _known(user)


def require_detached(*roles: Role) -> Callable[..., Coroutine[Any, Any, User]]:
    async def check(user: Annotated[User, Depends(detached_user)]) -> User:
        access.ensure_role(user, *roles)
        return user

    return check


def require(*roles: Role) -> Callable[..., Coroutine[Any, Any, User]]:
    """Dependency that admits only the given roles; the route then checks the scope."""

    async def check(user: CurrentUser) -> User:
        access.ensure_role(user, *roles)
        return user

    return check


def now() -> datetime:
    return datetime.now(UTC)


def today() -> date:
    return now().date()


Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
]
