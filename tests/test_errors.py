"""Every error is application/problem+json with the right status; nothing answers 500."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PROBLEM = "application/problem+json"


def assert_problem(response, status: int, slug: str | None = None) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    if slug:
        assert body["type"] == f"/problems/{slug}"
    return body


async def test_malformed_json_is_400(client):
    response = await client.post(
        "/v1/auth/register",
        content=b'{"email": "a@b.c", ',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400, "malformed-json")


async def test_wrong_type_is_422_naming_the_field(client):
    response = await client.post(
        "/v1/auth/register", json={"email": "a@example.com", "password": 12}
    )
    body = assert_problem(response, 422, "validation-error")
    assert body["field"] == "password"
    assert body["errors"][0]["location"] == "body"


async def test_missing_field_is_422_naming_it(client):
    response = await client.post("/v1/auth/register", json={"password": "long enough"})
    assert assert_problem(response, 422)["field"] == "email"


async def test_unknown_route_is_404(client):
    assert_problem(await client.get("/v1/nothing-here"), 404, "not-found")


async def test_wrong_method_is_405_with_allow(client):
    response = await client.delete("/v1/auth/register")
    assert_problem(response, 405, "method-not-allowed")
    assert "POST" in response.headers["allow"]


async def test_oversized_body_is_413(client, settings):
    big = b"x" * (settings.max_body_bytes + 1)
    response = await client.post(
        "/v1/auth/register", content=big, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload-too-large")


async def test_oversized_streamed_body_without_length_is_413(client, settings):
    async def chunks():
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"y" * 65536

    response = await client.post(
        "/v1/auth/register", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload-too-large")


async def test_missing_token_is_401(client):
    response = await client.get("/v1/me")
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_expired_token_is_401(client, users):
    user = await users.make()
    old = users.token(user, now=datetime.now(UTC) - timedelta(hours=2), ttl=timedelta(hours=1))
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {old}"})
    assert_problem(response, 401, "token-expired")


async def test_forged_token_is_401(client, users):
    user = await users.make()
    forged = jwt.encode(
        {"sub": str(user.id), "role": "admin", "iat": 0, "exp": 4102444800},
        "another-secret-of-sufficient-length!",
        algorithm="HS256",
    )
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401, "token-invalid")


async def test_unsigned_token_is_401(client, users):
    user = await users.make()
    unsigned = jwt.encode(
        {"sub": str(user.id), "iat": 0, "exp": 4102444800}, None, algorithm="none"
    )
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {unsigned}"})
    assert_problem(response, 401, "token-invalid")


async def test_garbage_token_is_401(client):
    response = await client.get("/v1/me", headers={"Authorization": "Bearer not.a.token"})
    assert_problem(response, 401, "token-invalid")


async def test_request_id_is_echoed(client):
    response = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


async def test_request_id_is_generated_when_absent_or_unsafe(client):
    generated = (await client.get("/healthz")).headers["x-request-id"]
    assert len(generated) >= 16
    unsafe = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"


async def test_errors_carry_the_request_id(client):
    response = await client.get("/nowhere", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "email": json_values,
            "password": json_values,
            "display_name": json_values,
            "phone": json_values,
            "role": json_values,
            "county_code": json_values,
        },
    ).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, path=st.sampled_from(["/v1/auth/register", "/v1/auth/token", "/v1/users"]))
async def test_arbitrary_bodies_never_answer_500(client, users, body, path):
    response = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM


async def test_nul_characters_are_422_naming_the_field(client):
    response = await client.post(
        "/v1/auth/token", json={"email": "a\u0000@example.com", "password": "whatever1"}
    )
    assert_problem(response, 422, "validation-error")
    assert response.json()["field"] == "email"


async def test_nul_in_a_query_parameter_is_never_a_500(client):
    response = await client.get("/v1/products", params={"q": "蜂\u0000蜜"})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


async def test_database_down_is_503_with_retry_after(app, client):
    from services.db import create_engine, session_factory

    dead = create_engine("postgresql://nobody@127.0.0.1:1/none", pool_pre_ping=False)
    app.state.sessionmaker = session_factory(dead)
    response = await client.get("/v1/products")
    await dead.dispose()
    assert_problem(response, 503, "database-unavailable")
    assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), 503, "database-unavailable"),
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), 503, "database-unavailable"),
        (asyncpg.exceptions.NumericValueOutOfRangeError("out of range"), 422, "invalid-value"),
        (asyncpg.exceptions.UndefinedFunctionError("no such function"), 500, "internal-error"),
    ],
)
async def test_driver_errors_of_the_one_statement_paths_map_like_sqlalchemys(
    app, client, error, status, kind
):
    # The tracking pushes and Stripe payments reach asyncpg without SQLAlchemy.
    async def fail() -> None:
        raise error

    app.add_api_route("/test-driver-error", fail)
    assert_problem(await client.get("/test-driver-error"), status, kind)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("gone"),
        # What a connection cut off mid-statement by a server restart answers next.
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 13; another operation (2) is in progress"
        ),
        asyncpg.exceptions.InterfaceError(
            "cannot perform operation: another operation is in progress"
        ),
    ],
)
async def test_the_drivers_own_refusals_through_sqlalchemy_are_503(app, client, error):
    # Translated and wrapped as SQLAlchemy's asyncpg dialect does for its statements.
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
    from sqlalchemy.exc import DBAPIError

    from services.db import create_engine

    engine = create_engine("postgresql://nobody@127.0.0.1:1/none")
    dbapi = engine.dialect.loaded_dbapi
    try:
        AsyncAdapt_asyncpg_connection._handle_exception_no_connection(dbapi, error)
    except dbapi.Error as translated:
        wrapped = DBAPIError.instance("BEGIN", None, translated, dbapi.Error)
    await engine.dispose()

    async def fail() -> None:
        raise wrapped

    app.add_api_route("/test-wrapped-driver-error", fail)
    assert_problem(await client.get("/test-wrapped-driver-error"), 503, "database-unavailable")
