"""The real API server as a subprocess: `marketplace serve` with N workers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPOSITORY = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class Server:
    base_url: str
    log: Path
    # The benchmark signs buyers' tokens with it rather than logging in (argon2 is slow).
    jwt_secret: str = field(repr=False)
    pid: int | None = None  # the supervisor's: its workers are its children

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log, lines)


@contextmanager
def running_server(
    database_url: str,
    folder: Path,
    *,
    workers: int,
    settings: dict[str, str] | None = None,
    ready_timeout_s: float = 90.0,
) -> Iterator[Server]:
    """Start the server, wait until /readyz answers 200, yield it, then stop it cleanly.

    `settings` are extra MARKETPLACE_* variables (pool size, Stripe, for instance).
    """
    port = free_port()
    jwt_secret = secrets.token_urlsafe(48)
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url,
            "MARKETPLACE_JWT_SECRET": jwt_secret,
            "MARKETPLACE_PII_KEY": secrets.token_urlsafe(32),
            "MARKETPLACE_LOG_LEVEL": "WARNING",
            "MARKETPLACE_DATA_DIR": str(folder / "app-data"),
            **(settings or {}),
        }
    )
    if workers > 1:
        # Several processes share one metrics registry through files.
        metrics = folder / "prometheus"
        metrics.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    else:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # `marketplace serve` as production runs it: with several workers, each binds the
    # port with SO_REUSEPORT, so the bench's burst of keep-alive connections is spread
    # over them instead of landing on whichever worker woke first.
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log_path = folder / "server.log"
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        # A session of its own: Ctrl-C reaches only this script, which then stops the
        # server in order instead of both dying at once.
        process = subprocess.Popen(
            command,
            cwd=REPOSITORY,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_ready(process, base_url, ready_timeout_s, log_path)
            yield Server(base_url, log_path, jwt_secret, process.pid)
        finally:
            _stop(process)


def _wait_ready(
    process: subprocess.Popen[bytes], base_url: str, timeout_s: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"the server was not ready within {timeout_s:.0f} s:\n{_tail(log)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        # The supervisor did not stop its workers in time: end the whole group it leads.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
