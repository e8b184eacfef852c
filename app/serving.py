"""Several API processes on one port, each accepting on a listening socket of its own.

uvicorn's `--workers` binds one socket in the parent and every worker accepts from
it. asyncio takes every waiting connection on each wake-up, so a burst of
keep-alive connections (a load balancer's pool, 32 storefront clients) can all land
on the worker that woke first: measured here, one worker at 99% of a core and the
other at 1% for the whole of a checkout run. With SO_REUSEPORT (Linux) each worker
binds the port itself, gets its own accept queue, and the kernel spreads new
connections over the queues by a hash of their addresses.

The supervisor starts the workers, replaces one that dies, stops them all on
SIGINT or SIGTERM, and gives up when a worker cannot start at all.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE

logger = logging.getLogger("marketplace.serving")

# A worker that dies this soon after starting, twice running, is not crashing at
# random: it cannot start (a bad setting, the database gone). Restarting it forever
# would hide that.
_EARLY_DEATH_S = 10.0


def reuse_port_available() -> bool:
    """Whether this platform balances connections across sockets sharing a port."""
    return hasattr(socket, "SO_REUSEPORT") and os.uname().sysname == "Linux"


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port as one member of a SO_REUSEPORT group.

    IPPROTO_TCP is named so that asyncio sets TCP_NODELAY on accepted connections:
    it looks at the socket's protocol, and 0 would leave Nagle's algorithm on.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True, slots=True)
class Target:
    """What each worker serves: an ASGI app by import string, as uvicorn takes it."""

    app: str
    factory: bool = False
    proxy_headers: bool = True
    backlog: int = 2048
    graceful_shutdown_s: int = 10


def _run_worker(target: Target, host: str, port: int) -> None:
    """A worker process: its own socket in the group, then uvicorn until SIGTERM."""
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        logger.error("worker cannot bind %s:%s: %s", host, port, exc)
        raise SystemExit(STARTUP_FAILURE) from exc
    config = uvicorn.Config(
        target.app,
        factory=target.factory,
        log_config=None,
        access_log=False,
        proxy_headers=target.proxy_headers,
        backlog=target.backlog,
        timeout_graceful_shutdown=target.graceful_shutdown_s,
    )
    uvicorn.Server(config).run(sockets=[sock])


@dataclass(slots=True)
class _Worker:
    process: BaseProcess
    started: float


@dataclass(slots=True)
class Supervisor:
    target: Target
    host: str
    port: int
    workers: int
    _stop: threading.Event = field(default_factory=threading.Event)
    _running: list[_Worker] = field(default_factory=list)
    _early_deaths: int = 0

    def run(self) -> int:
        """Serve until told to stop; the exit status (0, or 1 when workers cannot start)."""
        if not reuse_port_available():
            raise RuntimeError("Several workers on one port need SO_REUSEPORT (Linux).")
        if self.port == 0:
            raise ValueError("Several workers need a fixed port: each binds it on its own.")
        # Fail here, with one clear message, when something else holds the port.
        listening_socket(self.host, self.port).close()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        context = multiprocessing.get_context("spawn")
        status = 0
        try:
            self._running = [self._start(context) for _ in range(self.workers)]
            logger.info(
                "serving on %s:%s with %d workers (SO_REUSEPORT)",
                self.host,
                self.port,
                self.workers,
            )
            while not self._stop.wait(0.5):
                status |= self._replace_dead(context)
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return status

    def _replace_dead(self, context: multiprocessing.context.SpawnContext) -> int:
        """Start a worker in place of each one that died; 1 (and stop) when they cannot start."""
        for index, worker in enumerate(self._running):
            if worker.process.is_alive() or self._stop.is_set():
                continue
            pid, code = worker.process.pid, worker.process.exitcode
            _forget(worker)
            early = time.monotonic() - worker.started < _EARLY_DEATH_S
            self._early_deaths = self._early_deaths + 1 if early else 0
            if code == STARTUP_FAILURE or self._early_deaths >= 2:
                logger.error("worker %s could not start (exit %s); stopping", pid, code)
                self._stop.set()
                return 1
            logger.warning("worker %s died (exit %s); starting another", pid, code)
            self._running[index] = self._start(context)
        return 0

    def _start(self, context: multiprocessing.context.SpawnContext) -> _Worker:
        process = context.Process(
            target=_run_worker, args=(self.target, self.host, self.port), daemon=False
        )
        process.start()
        return _Worker(process, time.monotonic())

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def _shutdown(self) -> None:
        alive = [w for w in self._running if w.process.is_alive()]
        for worker in alive:
            assert worker.process.pid is not None
            os.kill(worker.process.pid, signal.SIGTERM)
        # uvicorn finishes the requests in flight, then the lifespan (job worker,
        # pools); past its own graceful timeout and a margin, the worker is killed.
        deadline = time.monotonic() + self.target.graceful_shutdown_s + 10
        for worker in alive:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                logger.error("worker %s did not stop; killing it", worker.process.pid)
                worker.process.kill()
                worker.process.join()
        for worker in self._running:
            _forget(worker)


def _forget(worker: _Worker) -> None:
    """A dead worker's live gauges leave the shared metrics (multi-process mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and worker.process.pid is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.process.pid)  # type: ignore[no-untyped-call]
