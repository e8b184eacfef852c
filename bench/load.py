"""A bounded async HTTP load generator: N workers, a fixed duration and a request cap.

Every worker keeps one keep-alive connection and sends its next request as soon
as the previous answer is read (a closed loop), so the figures are throughput
at that concurrency and the latency each client saw. Traffic goes to
127.0.0.1 only.

Two ways to say what to send: `run` cycles through fixed GET paths (the
catalogue), `run_calls` asks a source for each request as it is sent (a
checkout with a fresh Idempotency-Key, a webhook delivery signed at that
moment) and may hand each answer's body to a check (order ids to collect,
outcomes to verify).

Two engines: `raw`, a minimal HTTP/1.1 client on asyncio protocols (the
default, because it is cheap enough to share a 2-core machine with the server
it measures), and `httpx`, the well-known client, to cross-check it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench import cpu

MAX_DURATION_S = 600.0
MAX_REQUESTS = 2_000_000
MAX_CLIENTS = 512
ENGINES = ("raw", "httpx")


@dataclass(slots=True)
class LoadResult:
    clients: int
    duration_s: float  # from the first request sent to the last answer read
    requests: int  # answered with the expected status (and passing the check, if any)
    errors: int  # other statuses, failed checks and transport errors
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    # By status; an expected status whose body failed the check is "<status> <why>".
    statuses: dict[str, int] = field(default_factory=dict)
    # CPU the load generator itself used, in cores: on a small machine it competes
    # with the server, and this says by how much.
    client_cpu_cores: float = 0.0
    # CPU of the server's processes, of PostgreSQL's and of the whole machine over the
    # same time, in cores (`bench.cpu`); None where it was not measured.
    server_cpu_cores: float | None = None
    postgres_cpu_cores: float | None = None
    machine_cpu_cores: float | None = None
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-minute load before and after

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cpu_line(self) -> str:
        """The CPU each part used, in cores, for a progress line ('' when not measured)."""
        if self.machine_cpu_cores is None:
            return ""
        parts = [
            f"{name} {value:.2f}"
            for name, value in (
                ("server", self.server_cpu_cores),
                ("postgres", self.postgres_cpu_cores),
                ("machine", self.machine_cpu_cores),
            )
            if value is not None
        ]
        return "  cpu " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Call:
    """One request: its parts for httpx, and the same request as bytes for the raw client."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    wire: bytes
    tag: Any = None  # the caller's own, handed back to the check with the answer


# Answers the next request, or None when there is nothing left to send.
Source = Callable[[], Call | None]
# None when an answer with the expected status is right, else why not (a short label).
Check = Callable[[Call, bytes], str | None]


def make_call(
    base_url: str,
    method: str,
    path: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    tag: Any = None,
) -> Call:
    netloc = urlsplit(base_url).netloc
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {netloc}",
        "User-Agent: marketplace-bench",
        "Accept: application/json",
        *(f"{name}: {value}" for name, value in headers),
    ]
    if body or method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return Call(method, path, tuple(headers), body, wire, tag)


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
    from the server being measured at 1,500 requests/s. Bodies are copied out only
    when `keep_body` is set: the catalogue's are read and dropped.
    """

    def __init__(self, keep_body: bool) -> None:
        self.keep_body = keep_body
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
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
            answer = self._complete_answer()
        except ValueError as exc:
            self.waiter.set_exception(exc)
            return
        if answer is not None:
            self.waiter.set_result(answer)

    def _complete_answer(self) -> tuple[int, bytes] | None:
        """Status and body once a whole answer is buffered (and consumed), else None."""
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
            chunked = self._chunked(body_start)
            if chunked is None:
                return None
            body_end, body = chunked
        else:
            body_end = body_start + int(headers.get("content-length", "0"))
            if len(self.buffer) < body_end:
                return None
            body = bytes(self.buffer[body_start:body_end]) if self.keep_body else b""
        del self.buffer[:body_end]
        self.must_close = headers.get("connection") == "close"
        return status, body

    def _chunked(self, position: int) -> tuple[int, bytes] | None:
        """Where a complete chunked body ends, and the body itself when kept."""
        parts: list[bytes] = []
        while True:
            line_end = self.buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size = int(bytes(self.buffer[position:line_end]).split(b";")[0], 16)
            data_start = line_end + 2
            position = data_start + size + 2
            if len(self.buffer) < position:
                return None
            if size == 0:
                return position, b"".join(parts)
            if self.keep_body:
                parts.append(bytes(self.buffer[data_start : data_start + size]))

    async def send(self, request: bytes, timeout_s: float) -> tuple[int, bytes]:
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

    def __init__(self, host: str, port: int, timeout_s: float, keep_body: bool) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.keep_body = keep_body
        self.connection: _Connection | None = None

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.connection is None or not self.connection.open:
            loop = asyncio.get_running_loop()
            _, self.connection = await loop.create_connection(
                lambda: _Connection(self.keep_body), self.host, self.port
            )
        connection = self.connection
        try:
            answer = await connection.send(request, self.timeout_s)
        except BaseException:
            connection.close()
            self.connection = None
            raise
        if connection.must_close:
            connection.close()
            self.connection = None
        return answer

    async def aclose(self) -> None:
        if self.connection is not None:
            self.connection.close()


class _Sender:
    """Send a call, answer its status and body: the raw client, or httpx for cross-checking."""

    def __init__(self, engine: str, base_url: str, timeout_s: float, keep_body: bool) -> None:
        parts = urlsplit(base_url)
        self.raw = (
            _RawClient(parts.hostname or "127.0.0.1", parts.port or 80, timeout_s, keep_body)
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

    async def send(self, call: Call) -> tuple[int, bytes]:
        if self.raw is not None:
            return await self.raw.send(call.wire)
        assert self.httpx is not None
        response = await self.httpx.request(
            call.method,
            call.path,
            headers=dict(call.headers),
            content=call.body if call.body or call.method != "GET" else None,
        )
        await response.aread()
        return response.status_code, response.content

    async def aclose(self) -> None:
        if self.raw is not None:
            await self.raw.aclose()
        if self.httpx is not None:
            await self.httpx.aclose()


def _sender(engine: str, base_url: str, timeout_s: float, keep_body: bool) -> _Sender:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}")
    return _Sender(engine, base_url, timeout_s, keep_body)


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
    roots: cpu.Roots | None = None,
) -> LoadResult:
    """Send GET requests for `paths` (in turn) until the duration or the request cap is reached."""
    if not paths:
        raise ValueError("no paths to request")
    # Built once, so that the measured loop does no formatting.
    calls = [make_call(base_url, "GET", path) for path in paths]
    turn = itertools.count()

    def source() -> Call:
        return calls[next(turn) % len(calls)]

    return await run_calls(
        base_url,
        source,
        clients=clients,
        duration_s=duration_s,
        max_requests=max_requests,
        expect=expect,
        timeout_s=timeout_s,
        engine=engine,
        roots=roots,
    )


async def run_calls(
    base_url: str,
    source: Source,
    *,
    clients: int,
    duration_s: float,
    max_requests: int = MAX_REQUESTS,
    expect: int = 200,
    check: Check | None = None,
    timeout_s: float = 10.0,
    engine: str = "raw",
    roots: cpu.Roots | None = None,
) -> LoadResult:
    """Send what `source` gives until it runs dry, the duration ends or the cap is reached.

    An answer counts when its status is `expect` and `check` (given the call and the
    body) finds nothing wrong. Building a call is not part of its latency. With
    `roots`, the CPU of the server's and PostgreSQL's processes is measured over the run.
    """
    check_local(base_url)
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be between 1 and {MAX_CLIENTS}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration must be positive and at most {MAX_DURATION_S} s")
    max_requests = min(max_requests, MAX_REQUESTS)

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    expected = str(expect)
    issued = 0
    load_before = os.getloadavg()[0]
    senders = [_sender(engine, base_url, timeout_s, check is not None) for _ in range(clients)]
    meter = cpu.start(roots)
    started = time.perf_counter()
    cpu_started = time.process_time()
    deadline = started + duration_s
    last_answer = started

    async def worker(send: _Sender) -> None:
        nonlocal issued, last_answer
        while issued < max_requests and time.perf_counter() < deadline:
            call = source()
            if call is None:
                return
            issued += 1
            sent = time.perf_counter()
            try:
                status, body = await send.send(call)
            except (OSError, ValueError, httpx.HTTPError) as exc:
                # TimeoutError and ConnectionResetError are OSErrors.
                statuses[type(exc).__name__] += 1
                continue
            finally:
                last_answer = time.perf_counter()
            label = str(status)
            if label == expected and check is not None:
                problem = check(call, body)
                if problem is not None:
                    label = f"{status} {problem}"
            statuses[label] += 1
            if label == expected:
                latencies.append(last_answer - sent)

    try:
        await asyncio.gather(*(worker(sender) for sender in senders))
        elapsed = max(last_answer - started, 1e-9)
        client_cpu = time.process_time() - cpu_started
    finally:
        usage = meter.stop() if meter is not None else None
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
        client_cpu_cores=round(client_cpu / elapsed, 2),
        server_cpu_cores=_cores(usage, "server"),
        postgres_cpu_cores=_cores(usage, "postgres"),
        machine_cpu_cores=round(usage.machine_cores, 2) if usage is not None else None,
        load_average=(round(load_before, 2), round(os.getloadavg()[0], 2)),
    )


def _cores(usage: cpu.Usage | None, group: str) -> float | None:
    if usage is None or group not in usage.cores:
        return None
    return round(usage.cores[group], 3)
