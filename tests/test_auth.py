"""Sign-up, login, tokens and the failed-login throttle."""

from __future__ import annotations

import asyncio

import jwt

from tests.conftest import JWT_SECRET, PASSWORD


async def register(client, email="buyer@example.com", password="s3cret-enough", **extra):
    return await client.post(
        "/v1/auth/register", json={"email": email, "password": password, **extra}
    )


async def test_register_creates_a_buyer(client):
    response = await register(client, display_name="李 梅", phone="+86 138-0000-0000")
    assert response.status_code == 201
    body = response.json()
    assert body["role"] == "buyer"
    assert body["email"] == "buyer@example.com"
    assert body["phone"] == "+8613800000000"
    assert "password" not in response.text and "hash" not in response.text


async def test_register_stores_an_argon2_hash_not_the_password(client, session):
    from sqlalchemy import select

    from services.users.models import User

    await register(client, password="plain-text-never")
    user = (await session.scalars(select(User).where(User.email == "buyer@example.com"))).one()
    assert user.password_hash.startswith("$argon2id$")
    assert "plain-text-never" not in user.password_hash


async def test_register_twice_with_one_email_is_409(client):
    assert (await register(client)).status_code == 201
    response = await register(client, email="BUYER@example.com")
    assert response.status_code == 409
    assert response.json()["field"] == "email"


async def test_register_rejects_short_password_and_bad_email(client):
    assert (await register(client, password="short")).json()["field"] == "password"
    assert (await register(client, email="not-an-email")).json()["field"] == "email"


async def test_register_cannot_choose_a_role(client):
    response = await register(client, role="admin")
    assert response.status_code == 422
    assert response.json()["field"] == "role"


async def test_token_then_me(client):
    await register(client)
    response = await client.post(
        "/v1/auth/token", json={"email": "Buyer@Example.com", "password": "s3cret-enough"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["role"] == "buyer"
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["email"] == "buyer@example.com"


async def test_wrong_password_and_unknown_email_are_the_same_401(client):
    await register(client)
    wrong = await client.post(
        "/v1/auth/token", json={"email": "buyer@example.com", "password": "nope-nope"}
    )
    unknown = await client.post(
        "/v1/auth/token", json={"email": "ghost@example.com", "password": "nope-nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]


async def test_eleventh_attempt_after_ten_failures_is_429_with_retry_after(client, users):
    user = await users.make()
    for _ in range(10):
        response = await client.post(
            "/v1/auth/token", json={"email": user.email, "password": "wrong-guess"}
        )
        assert response.status_code == 401
    # Even the right password is refused while the account is throttled.
    response = await client.post("/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/problem+json"
    retry_after = int(response.headers["retry-after"])
    assert 0 < retry_after <= 900


async def test_throttle_is_per_account(client, users):
    victim, other = await users.make(), await users.make()
    for _ in range(10):
        await client.post("/v1/auth/token", json={"email": victim.email, "password": "wrong-guess"})
    response = await client.post(
        "/v1/auth/token", json={"email": other.email, "password": PASSWORD}
    )
    assert response.status_code == 200


async def test_failures_older_than_the_window_do_not_count(client, users, session):
    from datetime import UTC, datetime, timedelta

    from services.users.models import LoginFailure

    user = await users.make()
    long_ago = datetime.now(UTC) - timedelta(minutes=16)
    session.add_all([LoginFailure(email=user.email, failed_at=long_ago) for _ in range(10)])
    await session.flush()
    response = await client.post("/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 200


async def test_throttle_limit_is_configurable(app, client, users):
    app.state.settings = app.state.settings.model_copy(update={"login_max_failures": 2})
    user = await users.make()
    for _ in range(2):
        await client.post("/v1/auth/token", json={"email": user.email, "password": "wrong-guess"})
    response = await client.post("/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 429


async def test_disabled_account_token_is_refused(client, users, session):
    user = await users.make()
    headers = users.auth(user)
    user.is_active = False
    await session.flush()
    response = await client.get("/v1/me", headers=headers)
    assert response.status_code == 401


async def test_concurrent_logins_are_throttled_under_real_connections(database_url, settings):
    """Twenty guesses at once on separate connections: at most ten are checked."""
    import httpx

    from app.main import create_app
    from services.db import create_engine, session_factory
    from services.users.models import Role
    from services.users.service import NewStaff, create_staff

    app = create_app(settings.model_copy(update={"db_pool_size": 25}))
    email = "race-target@example.test"
    async with session_factory(app.state.engine)() as s, s.begin():
        await create_staff(s, NewStaff(email=email, password=PASSWORD, role=Role.admin))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            responses = await asyncio.gather(
                *[
                    client.post("/v1/auth/token", json={"email": email, "password": "wrong-guess"})
                    for _ in range(20)
                ]
            )
        codes = sorted(r.status_code for r in responses)
        assert codes.count(401) == 10
        assert codes.count(429) == 10
    finally:
        cleanup = create_engine(database_url)
        async with cleanup.begin() as conn:
            await conn.exec_driver_sql(
                "DELETE FROM login_failures WHERE email = 'race-target@example.test';"
            )
            await conn.exec_driver_sql("DELETE FROM users WHERE email = 'race-target@example.test'")
        await cleanup.dispose()
        await app.state.engine.dispose()
