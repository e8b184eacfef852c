"""A bounded async HTTP load generator: N workers, a fixed duration and a request cap.

Every worker keeps one keep-alive connection and sends its next request as soon
as the previous answer is read (a closed loop), so the figures are throughput
at that concurrency and the latency each client saw. Traffic goes to
127.0.0.1 only.

Two engines: `raw`, a minimal HTTP/1.1 client on asyncio protocols (the
default, because it is cheap enough to share a 2-core machine with the server
it measures), and `httpx`, the well-known client, to cross-check it.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

MAX_DURATION_S = 600.0
MAX_REQUESTS = 2_000_000
MAX_CLIENTS = 512
ENGINES = ("raw", "httpx")


@dataclass(slots=True)
class LoadResult:
    clients: int
    duration_s: float  # from the first request sent to the last answer read
    requests: int  # answered with the expected status
    errors: int  # other statuses and transport errors
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    statuses: dict[str, int] = field(default_factory=dict)
    # CPU the load generator itself used, in cores: on a small machine it competes
    # with the server, and this says by how much.
    client_cpu_cores: float = 0.0
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-minute load before and after

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def check_local(base_url: str) -> None:
    host = urlsplit(base_url).hostname
    if host != "127.0.0.1":
        raise ValueError(f"the load generator only targets 127.0.0.1, not {host!r}")


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends a request and reads one full answer.

    Just enough HTTP for measuring: status line, Content-Length or chunked bodies,
    `Connection: close`. It costs the generator a few tens of microseconds a request,
    where httpx costs about 0.65 ms, which on a 2-core machine would take a whole core
    from the server being measured at 1,500 requests/s.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.open = False
        self.must_close = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            status = self._complete_answer()
        except ValueError as exc:
            self.waiter.set_exception(exc)
            return
        if status is not None:
            self.waiter.set_result(status)

    def _complete_answer(self) -> int | None:
        """The status once a whole answer is buffered (and consumed), else None."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        body_start = end + 4
        if headers.get("transfer-encoding") == "chunked":
            body_end = self._chunked_end(body_start)
            if body_end is None:
                return None
        else:
            body_end = body_start + int(headers.get("content-length", "0"))
            if len(self.buffer) < body_end:
                return None
        del self.buffer[:body_end]
        self.must_close = headers.get("connection") == "close"
        return status

    def _chunked_end(self, position: int) -> int | None:
        while True:
            line_end = self.buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size = int(bytes(self.buffer[position:line_end]).split(b";")[0], 16)
            position = line_end + 2 + size + 2
            if len(self.buffer) < position:
                return None
            if size == 0:
                return position

    async def send(self, request: bytes, timeout_s: float) -> int:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        timer = loop.call_later(timeout_s, self._time_out)
        self.transport.write(request)
        try:
            return await self.waiter
        finally:
            timer.cancel()

    def _time_out(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(TimeoutError("no complete answer in time"))
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _RawClient:
    """Requests over one connection, reopened when the server closes it."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.connection: _Connection | None = None

    async def get(self, request: bytes) -> int:
        if self.connection is None or not self.connection.open:
            loop = asyncio.get_running_loop()
            _, self.connection = await loop.create_connection(_Connection, self.host, self.port)
        connection = self.connection
        try:
            status = await connection.send(request, self.timeout_s)
        except BaseException:
            connection.close()
            self.connection = None
            raise
        if connection.must_close:
            connection.close()
            self.connection = None
        return status

    async def aclose(self) -> None:
        if self.connection is not None:
            self.connection.close()


def _request_bytes(base_url: str, path: str) -> bytes:
    netloc = urlsplit(base_url).netloc
    return (
        f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\nUser-Agent: marketplace-bench\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode("ascii")


class _Sender:
    """GET a path, answer the status: the raw client, or httpx for cross-checking."""

    def __init__(self, engine: str, base_url: str, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url
        self.raw = (
            _RawClient(parts.hostname or "127.0.0.1", parts.port or 80, timeout_s)
            if engine == "raw"
            else None
        )
        # One httpx client (one connection) per worker: a single client with N
        # connections makes httpcore scan its whole pool on every request.
        self.httpx = (
            None
            if engine == "raw"
            else httpx.AsyncClient(
                base_url=base_url,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                timeout=httpx.Timeout(timeout_s),
            )
        )

    async def get(self, path: str, request: bytes) -> int:
        """GET `path`; the raw client sends `request`, its bytes, prepared in advance."""
        if self.raw is not None:
            return await self.raw.get(request)
        assert self.httpx is not None
        response = await self.httpx.get(path)
        await response.aread()
        return response.status_code

    async def aclose(self) -> None:
        if self.raw is not None:
            await self.raw.aclose()
        if self.httpx is not None:
            await self.httpx.aclose()


def _sender(engine: str, base_url: str, timeout_s: float) -> _Sender:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}")
    return _Sender(engine, base_url, timeout_s)


async def run(
    base_url: str,
    paths: Sequence[str],
    *,
    clients: int,
    duration_s: float,
    max_requests: int = MAX_REQUESTS,
    expect: int = 200,
    timeout_s: float = 10.0,
    engine: str = "raw",
) -> LoadResult:
    """Send GET requests for `paths` (in turn) until the duration or the request cap is reached."""
    check_local(base_url)
    if not paths:
        raise ValueError("no paths to request")
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be between 1 and {MAX_CLIENTS}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration must be positive and at most {MAX_DURATION_S} s")
    max_requests = min(max_requests, MAX_REQUESTS)

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    issued = 0
    load_before = os.getloadavg()[0]
    senders = [_sender(engine, base_url, timeout_s) for _ in range(clients)]
    # Built once, so that the measured loop does no formatting.
    requests = [_request_bytes(base_url, path) for path in paths]
    started = time.perf_counter()
    cpu_started = time.process_time()
    deadline = started + duration_s
    last_answer = started

    async def worker(offset: int, send: _Sender) -> None:
        nonlocal issued, last_answer
        index = offset
        while issued < max_requests:
            sent = time.perf_counter()
            if sent >= deadline:
                return
            issued += 1
            position = index % len(paths)
            index += clients
            try:
                status = await send.get(paths[position], requests[position])
            except (OSError, ValueError, httpx.HTTPError) as exc:
                # TimeoutError and ConnectionResetError are OSErrors.
                statuses[type(exc).__name__] += 1
                continue
            finally:
                last_answer = time.perf_counter()
            statuses[str(status)] += 1
            if status == expect:
                latencies.append(last_answer - sent)

    try:
        await asyncio.gather(*(worker(i, sender) for i, sender in enumerate(senders)))
        elapsed = max(last_answer - started, 1e-9)
        cpu = time.process_time() - cpu_started
    finally:
        for sender in senders:
            await sender.aclose()
    latencies.sort()
    ok = len(latencies)
    ms = [value * 1000 for value in latencies]
    return LoadResult(
        clients=clients,
        duration_s=round(elapsed, 3),
        requests=ok,
        errors=sum(statuses.values()) - ok,
        requests_per_s=round(ok / elapsed, 1),
        p50_ms=round(percentile(ms, 50), 2),
        p95_ms=round(percentile(ms, 95), 2),
        p99_ms=round(percentile(ms, 99), 2),
        max_ms=round(ms[-1], 2) if ms else 0.0,
        mean_ms=round(sum(ms) / ok, 2) if ok else 0.0,
        statuses=dict(statuses),
        client_cpu_cores=round(cpu / elapsed, 2),
        load_average=(round(load_before, 2), round(os.getloadavg()[0], 2)),
    )
