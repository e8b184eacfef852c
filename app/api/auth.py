"""Sign-up, tokens and the caller's own account."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, status

from app.deps import CurrentUser, SessionDep, SettingsDep, now
from app.schemas.problem import problem_responses
from app.schemas.users import RegisterRequest, TokenRequest, TokenResponse, UserOut
from services.users import service as users
from services.users.tokens import issue_token

router = APIRouter(prefix="/v1", tags=["auth"])


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=problem_responses(400, 409, 413, 422),
)
async def register(body: RegisterRequest, session: SessionDep) -> UserOut:
    user = await users.register_buyer(
        session,
        users.NewAccount(body.email, body.password, body.display_name, body.phone),
    )
    return UserOut.model_validate(user)


@router.post(
    "/auth/token",
    response_model=TokenResponse,
    responses=problem_responses(400, 401, 413, 422, 429),
)
async def token(body: TokenRequest, session: SessionDep, settings: SettingsDep) -> TokenResponse:
    policy = users.LoginPolicy(
        max_failures=settings.login_max_failures,
        window=timedelta(seconds=settings.login_window_seconds),
    )
    moment = now()
    user = await users.authenticate(session, body.email, body.password, policy=policy, now=moment)
    ttl = timedelta(seconds=settings.token_ttl_seconds)
    access_token = issue_token(
        user_id=user.id, role=user.role.value, secret=settings.signing_secret, ttl=ttl, now=moment
    )
    return TokenResponse(access_token=access_token, expires_in=settings.token_ttl_seconds)


@router.get("/me", response_model=UserOut, responses=problem_responses(401))
async def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)
