"""The `marketplace` command on the embedded PostgreSQL, as a user runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["MARKETPLACE_DATA_DIR"] = str(data_dir)
    return env


def _marketplace(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def test_serve_on_embedded_postgres_keeps_data_across_restarts(tmp_path):
    data_dir = tmp_path / "data"
    created = subprocess.run(
        _marketplace("create-admin", "--email", "root@example.com", "--password", "admin-pass-1"),
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "database left running"

    port = _free_port()
    server = subprocess.Popen(
        _marketplace("serve", "--port", str(port)),
        env=_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, "not ready within 60 s"
        token = httpx.post(
            f"{base}/v1/auth/token", json={"email": "root@example.com", "password": "admin-pass-1"}
        )
        assert token.status_code == 200, token.text
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0].decode()
    assert server.returncode == 0, output
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "database left running"
    assert (data_dir / "jwt_secret").exists()


def test_serve_with_two_workers_shares_one_metrics_registry_and_stops_cleanly(tmp_path):
    data_dir = tmp_path / "data"
    metrics = tmp_path / "prometheus"
    metrics.mkdir()
    (metrics / "counter_999999.db").write_bytes(b"left by an earlier run")
    env = _env(data_dir) | {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    port = _free_port()
    server = subprocess.Popen(
        _marketplace("serve", "--port", str(port), "--workers", "2"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        workers: set[str] = set()
        asked = 0
        # Each request on a new connection; the kernel hashes each to one worker's
        # socket, and each worker keeps its metrics in files named for its pid.
        while len(workers) < 2:
            assert server.poll() is None, server.communicate()[0].decode()
            assert time.monotonic() < deadline, f"workers seen: {workers}"
            try:
                answer = httpx.get(f"{base}/readyz", timeout=5)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if answer.status_code == 200:
                asked += 1
                workers = {p.stem.rsplit("_", 1)[1] for p in metrics.glob("counter_*.db")}
        exposed = httpx.get(f"{base}/metrics", timeout=5).text
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0].decode()
    assert server.returncode == 0, output
    assert "999999" not in workers, "a stale file of an earlier run was counted"
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposed.splitlines()
        if line.startswith("http_requests_total{")
        and 'handler="/readyz"' in line
        and 'status="200"' in line
    )
    assert counted == asked, exposed
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "database left running"
