"""Pure ASGI middleware: request body limit, one structured access-log line per request,
and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PROBLEM_BASE
from app.schemas.problem import PROBLEM_MEDIA_TYPE

access_logger = logging.getLogger("app.access")

# Seconds; from a cached catalogue page to a slow export request.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BodySizeLimitMiddleware:
    """Refuse bodies over the limit with 413, whether declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
        received = 0
        state = {"started": False, "rejected": False}

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request" and not state["rejected"]:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer now and tell the app the client went away, so that it
                    # stops reading; whatever it tries to send afterwards is dropped.
                    state["rejected"] = True
                    if not state["started"]:
                        await self._reject(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["rejected"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {
                "type": PROBLEM_BASE + "payload-too-large",
                "title": "Payload Too Large",
                "status": 413,
                "detail": f"The request body is larger than {self.max_bytes} bytes.",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class AccessMiddleware:
    """Per request, inside the request-id context: one structured access-log line, and
    the Prometheus metrics by the route template FastAPI matched.

    The routing has already found the route (`scope["route"]`); resolving it again
    for the label, as prometheus-fastapi-instrumentator does, cost more per request
    than most of our handlers' own Python (measured on the webhooks).
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry, skip: frozenset[str]) -> None:
        self.app = app
        self.skip = skip
        self.requests = Counter(
            "http_requests_total",
            "Requests by route template, method and status.",
            ("handler", "method", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer, by route template and method.",
            ("handler", "method"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            elapsed = time.perf_counter() - started
            method = scope.get("method", "")
            access_logger.info(
                "request",
                extra={
                    "method": method,
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            # Unmatched paths share one label, so that scanners cannot grow the series.
            handler = getattr(scope.get("route"), "path", None) or "none"
            if handler not in self.skip:
                self.requests.labels(handler, method, str(status)).inc()
                self.duration.labels(handler, method).observe(elapsed)
