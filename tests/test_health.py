"""Liveness, readiness and metrics."""

from __future__ import annotations

from sqlalchemy import text


async def test_healthz_answers_ok(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ready_when_database_is_at_head(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["revision"]


async def test_readyz_is_503_when_migrations_are_behind(client, connection):
    await connection.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/migrations-pending")


async def test_readyz_is_503_when_database_is_unreachable(app, client, settings):
    from services.db import create_engine, session_factory

    dead = create_engine("postgresql://nobody@127.0.0.1:1/none", pool_pre_ping=False)
    app.state.sessionmaker = session_factory(dead)
    response = await client.get("/readyz")
    await dead.dispose()
    assert response.status_code == 503
    assert response.json()["type"].endswith("/database-unavailable")
    assert response.headers["retry-after"]


async def test_metrics_count_requests_by_route_template(client, users):
    user = await users.make()
    await client.get("/v1/me", headers=users.auth(user))
    await client.get("/v1/me", headers=users.auth(user))
    metrics = (await client.get("/metrics")).text
    assert 'http_requests_total{handler="/v1/me",method="GET",status="200"} 2.0' in metrics
    assert "http_request_duration_seconds_bucket" in metrics


async def test_unmatched_paths_share_one_label_and_metrics_are_not_counted(client):
    for path in ("/v1/nothing-here", "/wp-login.php", "/metrics"):
        await client.get(path)
    metrics = (await client.get("/metrics")).text
    assert 'http_requests_total{handler="none",method="GET",status="404"} 2.0' in metrics
    assert 'handler="/metrics"' not in metrics
    assert "wp-login" not in metrics
