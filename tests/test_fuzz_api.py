"""Schema-driven fuzzing of every operation against a live server (schemathesis).

A real uvicorn process serves a database of its own, so that what the fuzzer
creates is committed like in production. No input may produce a 5xx, and every
answer must match the documented schema (status code, content type, body).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.conftest import create_database, drop_database

SPEC = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"
ADMIN_EMAIL = "fuzz-admin@example.com"
ADMIN_PASSWORD = "fuzz-admin-password"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(
    server_url: str, tmp_path_factory: pytest.TempPathFactory, fake_stripe: Any
) -> Iterator[str]:
    name = f"marketplace_fuzz_{uuid.uuid4().hex[:10]}"
    url = asyncio.run(create_database(server_url, name))
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "MARKETPLACE_JWT_SECRET": "fuzz-secret-long-enough-for-hs256-signing",
        "MARKETPLACE_PII_KEY": "fuzz-pii-key",
        "MARKETPLACE_DATA_DIR": str(tmp_path_factory.mktemp("fuzz-data")),
        "MARKETPLACE_LOG_LEVEL": "ERROR",
        "MARKETPLACE_STRIPE_SECRET_KEY": "sk_test_fuzz",
        "MARKETPLACE_STRIPE_WEBHOOK_SECRET": "whsec_fuzz",
        "MARKETPLACE_STRIPE_API_BASE": fake_stripe.url,
        # Tracking webhooks configured, so fuzzed pushes reach the signature check.
        "MARKETPLACE_AFTERSHIP_WEBHOOK_SECRET": "aftership-fuzz",
        "MARKETPLACE_KUAIDI100_SALT": "kuaidi100-fuzz",
    }
    subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "create-admin",
            "--email",
            ADMIN_EMAIL,
            "--password",
            ADMIN_PASSWORD,
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise RuntimeError("fuzz server did not become ready")
        yield base
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
        asyncio.run(drop_database(server_url, name))
        # A 500 is logged with its traceback: make it visible when the test fails.
        if b"unhandled error" in stderr:
            sys.stderr.write(stderr.decode(errors="replace"))


@pytest.fixture(scope="module")
def admin_headers(live_server: str) -> dict[str, str]:
    token = httpx.post(
        f"{live_server}/v1/auth/token", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    ).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


# Loaded from the committed spec, which a test keeps equal to what the app serves.
schema = schemathesis.openapi.from_path(SPEC)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx_or_breaks_its_schema(
    case: Any, live_server: str, admin_headers: dict[str, str]
) -> None:
    # Half the cases as an admin (who reaches the deepest code), half anonymous.
    headers = admin_headers if hash(repr(case.path_parameters)) % 2 == 0 else {}
    # Schema-valid input may still break a business rule (an unknown region, say),
    # so a 422 for "valid" data is not a failure; and unknown query parameters are
    # ignored, as HTTP APIs do, so "invalid data accepted" is not checked either.
    case.call_and_validate(
        base_url=live_server,
        headers=headers,
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
            checks.response_headers_conformance,
        ],
    )
