"""Several API processes on one port: connections spread, dead workers replaced, clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from app.serving import listening_socket, reuse_port_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not reuse_port_available(), reason="SO_REUSEPORT balancing is Linux's"),
]

REPOSITORY = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _supervise(
    port: int, app: str = "tests.pid_app:app", workers: int = 2
) -> subprocess.Popen[bytes]:
    code = (
        "import sys; from app.serving import Supervisor, Target; "
        f"sys.exit(Supervisor(Target({app!r}), '127.0.0.1', {port}, {workers}).run())"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def _ask(port: int) -> int:
    """The pid of the worker that answers one request on a new connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return int(await reader.readexactly(length))
    finally:
        writer.close()


async def _burst(port: int, connections: int) -> list[int]:
    """Open every connection at once, as a pool of keep-alive clients does."""
    return list(await asyncio.gather(*(_ask(port) for _ in range(connections))))


def _burst_while_workers_change(port: int, connections: int) -> list[int]:
    """A burst, or nothing when a connection failed while workers start or die.

    Connections the kernel queued on a killed worker's socket are reset as that
    socket closes, and none are accepted before the first worker listens: ask
    again shortly, as a client would.
    """
    try:
        return asyncio.run(_burst(port, connections))
    except OSError:
        time.sleep(0.1)
        return []


def _workers_listening(port: int, server: subprocess.Popen[bytes], count: int = 2) -> set[int]:
    """Ask on new connections until `count` different workers have answered."""
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while len(seen) < count:
        assert server.poll() is None, server.communicate()[0].decode()
        assert time.monotonic() < deadline, f"only {seen} answered within 60 s"
        seen.update(_burst_while_workers_change(port, 8))
    return seen


def _stop(server: subprocess.Popen[bytes]) -> str:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    return server.communicate(timeout=60)[0].decode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_burst_of_connections_is_spread_over_every_worker():
    port = _free_port()
    server = _supervise(port)
    try:
        workers = _workers_listening(port, server)
        # 32 connections opened at once: with one shared socket, the worker that
        # wakes first takes them all; with a socket each, the kernel hashes them out.
        answered = Counter(asyncio.run(_burst(port, 32)))
    finally:
        _stop(server)
    assert set(answered) == workers
    # Binomial(32, 1/2) falls under 4 with probability about 2e-6.
    assert min(answered.values()) >= 4, answered


def test_a_worker_that_dies_is_replaced_and_sigterm_stops_them_all():
    port = _free_port()
    server = _supervise(port)
    try:
        first = _workers_listening(port, server)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        now_serving: set[int] = set()
        while not (len(now_serving) == 2 and victim not in now_serving):
            assert time.monotonic() < deadline, f"no replacement for {victim}: {now_serving}"
            now_serving = set(_burst_while_workers_change(port, 16))
        assert now_serving & first == first - {victim}
    finally:
        output = _stop(server)
    assert server.returncode == 0, output
    assert not any(_alive(pid) for pid in now_serving)


def test_workers_that_cannot_start_stop_the_supervisor_with_an_error():
    port = _free_port()
    server = _supervise(port, app="tests.no_such_module:app")
    output = server.communicate(timeout=90)[0].decode()
    assert server.returncode == 1, output
    assert "could not start" in output


def test_a_port_held_by_another_program_is_refused_before_any_worker_starts():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", port)
