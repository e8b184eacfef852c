"""A local fake of Stripe's HTTP API (PaymentIntents, refunds, transfers), with fault injection.

`FakeStripe` holds the state and is an ASGI app (`.app`); `serve_fake_stripe()`
runs it with uvicorn on a free 127.0.0.1 port in a background thread, so the real
stripe-python client, its retries and its timeouts are exercised end to end:

    with serve_fake_stripe() as fake:
        config = StripeConfig(api_key="sk_test_x", webhook_secret=..., api_base=fake.url)
        fake.state.fail_next(2, status=503)
        fake.state.calls["POST /v1/payment_intents"]

Faults model trouble in front of Stripe's API (network, load balancer): they are
not stored under the idempotency key, so a retry with the same key gets a fresh
attempt. `timeout_next(..., applied=True)` models the nastier case of Stripe doing
the work and the answer getting lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes import stripe_forms as form
from tests.fakes.serving import serve_in_thread
from tests.fakes.stripe_forms import StripeFailure
from tests.fakes.stripe_objects import (
    DECLINING_PAYMENT_METHODS,
    Answer,
    Context,
    Params,
    StripeObjects,
)
from tests.fakes.stripe_webhooks import API_VERSION, make_event, new_id, sign, webhook_delivery

__all__ = [
    "DECLINING_PAYMENT_METHODS",
    "FakeStripe",
    "FakeStripeServer",
    "RecordedRequest",
    "StripeFailure",
    "make_event",
    "serve_fake_stripe",
    "sign",
    "webhook_delivery",
]

_MAX_IDEMPOTENCY_KEY = 255


@dataclass
class RecordedRequest:
    """One request as the fake saw it, for assertions."""

    method: str
    path: str
    endpoint: str  # route template, the key of FakeStripe.calls
    params: Params
    api_key: str | None
    idempotency_key: str | None
    at: float
    status: int = 0  # the answer's HTTP status, once given
    replayed: bool = False
    fault: str | None = None  # "fail", "timeout", "random" when one was injected


@dataclass
class _Fault:
    kind: str  # "fail" or "timeout"
    remaining: int
    status: int = 500
    seconds: float = 0.0
    applied: bool = False
    endpoint: str | None = None
    should_retry: bool | None = None


@dataclass
class _Stored:
    fingerprint: str
    status: int
    body: str  # JSON, as first sent
    request_id: str


class FakeStripe:
    """Stripe's state for one (test) account, and the knobs to make it misbehave."""

    def __init__(
        self,
        *,
        seed: int = 0,
        failure_ratio: float = 0.0,
        api_keys: Collection[str] | None = None,
        keep_requests: int | None = 10_000,
        record_events: bool = True,
    ) -> None:
        """`api_keys`: the keys accepted (default: any `sk_test_...`).

        `keep_requests` bounds the request log and `record_events=False` turns the
        event log off, so that long benchmark runs do not grow without limit.
        """
        # The server thread and the test thread both touch the state; every
        # operation is short and synchronous, so one lock is enough.
        self._lock = threading.RLock()
        self._seed = seed
        self._random = random.Random(seed)
        self._api_keys = frozenset(api_keys) if api_keys is not None else None
        self.failure_ratio = failure_ratio
        self._faults: deque[_Fault] = deque()
        # Set when the server stops, so held (timed-out) requests end at once
        # instead of keeping the shutdown waiting or being cancelled mid-flight.
        # It lives on the server's loop, made by the first held request.
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idempotency: dict[tuple[str, str], _Stored] = {}
        self.objects = StripeObjects(record_events=record_events)
        # Shortcuts for assertions: the same dicts and list the objects live in.
        self.payment_intents = self.objects.payment_intents
        self.charges = self.objects.charges
        self.refunds = self.objects.refunds
        self.transfers = self.objects.transfers
        self.events = self.objects.events  # what Stripe would have sent to webhooks
        self.calls: Counter[str] = Counter()  # per endpoint, faults and errors included
        self.requests: deque[RecordedRequest] = deque(maxlen=keep_requests)
        self.app = self._build_app()

    # -- knobs -------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        endpoint: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """Answer the next `n` calls (to `endpoint`, e.g. "POST /v1/refunds") with `status`.

        `should_retry` sets Stripe's `Stripe-Should-Retry` header, which
        stripe-python obeys over its own judgement.
        """
        _positive(n)
        with self._lock:
            self._faults.append(
                _Fault("fail", n, status=status, endpoint=endpoint, should_retry=should_retry)
            )

    def timeout_next(
        self,
        n: int = 1,
        seconds: float = 5.0,
        *,
        applied: bool = False,
        endpoint: str | None = None,
    ) -> None:
        """Hold the next `n` calls for `seconds` (longer than the client's timeout).

        With `applied` the call takes effect (and is stored under its idempotency
        key) before the answer is held back: Stripe did it, the client never heard.
        """
        _positive(n)
        with self._lock:
            self._faults.append(
                _Fault("timeout", n, seconds=seconds, applied=applied, endpoint=endpoint)
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self.failure_ratio = 0.0

    def reset(self) -> None:
        """Forget everything: objects, idempotency keys, faults, counters."""
        with self._lock:
            self.clear_faults()
            self._random.seed(self._seed)
            self._idempotency.clear()
            self.objects.clear()
            self.calls.clear()
            self.requests.clear()

    # -- direct helpers (no HTTP), for tests that need a state quickly -------------

    def confirm(self, intent_id: str, payment_method: str | None = None) -> dict[str, Any]:
        """Move an intent to succeeded, as the buyer's browser would; the new intent.

        A payment method in DECLINING_PAYMENT_METHODS raises the StripeFailure the
        confirm endpoint would answer with (a 402 card_declined).
        """
        with self._lock:
            context = Context(new_id("req", 14), None)
            _, body = self.objects.confirm(context, intent_id, payment_method)
            return copy.deepcopy(body)

    # -- HTTP plumbing -----------------------------------------------------------

    def _build_app(self) -> Starlette:
        def route(method: str, path: str, op: Callable[[Context, Params, str], Answer]) -> Route:
            endpoint = f"{method} {path}"

            async def handle(request: Request) -> Response:
                return await self._handle(request, endpoint, op)

            return Route(path, handle, methods=[method])

        async def not_found(request: Request, exc: Exception) -> Response:
            message = f"Unrecognized request URL ({request.method}: {request.url.path})."
            status = exc.status_code if isinstance(exc, HTTPException) else 404
            return _json(StripeFailure(status, message).body, status, new_id("req", 14))

        return Starlette(
            routes=[
                route("POST", "/v1/payment_intents", self.objects.create_intent),
                route("GET", "/v1/payment_intents/{id}", self.objects.retrieve_intent),
                route("POST", "/v1/payment_intents/{id}/cancel", self.objects.cancel_intent),
                route("POST", "/v1/payment_intents/{id}/confirm", self.objects.confirm_intent),
                route("POST", "/v1/refunds", self.objects.create_refund),
                route("GET", "/v1/refunds/{id}", self.objects.retrieve_refund),
                route("POST", "/v1/transfers", self.objects.create_transfer),
                route("GET", "/v1/transfers/{id}", self.objects.retrieve_transfer),
            ],
            exception_handlers={404: not_found, 405: not_found},
        )

    async def _handle(
        self, request: Request, endpoint: str, op: Callable[[Context, Params, str], Answer]
    ) -> Response:
        # Stripe ignores idempotency keys on GET: reads are idempotent by nature.
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        ctx = Context(new_id("req", 14), key)
        raw = await request.body() if request.method == "POST" else b""
        text = raw.decode(errors="replace")
        # Parsed once, for the request log and for the operation; a form that does not
        # parse is logged empty and answered with its error by `_run`.
        parsed: Params | StripeFailure
        try:
            parsed = form.parse_form(text or request.url.query)
        except StripeFailure as failure:
            parsed = failure
        record = RecordedRequest(
            method=request.method,
            path=request.url.path,
            endpoint=endpoint,
            params={} if isinstance(parsed, StripeFailure) else copy.deepcopy(parsed),
            api_key=_bearer(request.headers.get("authorization")),
            idempotency_key=ctx.idempotency_key,
            at=time.time(),
        )
        with self._lock:
            self.calls[endpoint] += 1
            self.requests.append(record)
            fault = self._take_fault(endpoint, record)

        if fault is not None and fault.kind == "fail":
            return self._answer(record, ctx, *_injected(fault.status), fault.should_retry)
        if fault is not None and not fault.applied:
            await self._hold(fault.seconds)
            return self._answer(record, ctx, *_injected(500))

        status, body, replayed = self._run(request, record, ctx, parsed, op)
        if fault is not None:  # applied: the work is done and stored, the answer is late
            await self._hold(fault.seconds)
        return self._answer(record, ctx, status, body, replayed=replayed)

    async def _hold(self, seconds: float) -> None:
        with self._lock:
            if self._release is None:
                self._release, self._loop = asyncio.Event(), asyncio.get_running_loop()
            release = self._release
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), seconds)

    def _release_held(self) -> None:
        """From any thread: let every held request answer now."""
        with self._lock:
            release, loop = self._release, self._loop
            self._release = self._loop = None
        if release is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(release.set)

    def _run(
        self,
        request: Request,
        record: RecordedRequest,
        ctx: Context,
        parsed: Params | StripeFailure,
        op: Callable[[Context, Params, str], Answer],
    ) -> tuple[int, str, str | None]:
        """Authenticate, apply idempotency, run the operation: (status, body as JSON text,
        replayed-from). The body is written out under the lock, so that it is the state
        of that moment; the same text is kept for a replay."""
        stored_key: tuple[str, str] | None = None
        fingerprint = ""
        with self._lock:
            try:
                api_key = self._authenticate(record.api_key)
                if isinstance(parsed, StripeFailure):
                    raise parsed
                params = parsed
                stored_key = self._check_idempotency_key(api_key, ctx.idempotency_key)
                fingerprint = json.dumps([request.method, request.url.path, params], sort_keys=True)
                if stored_key is not None and stored_key in self._idempotency:
                    first = self._idempotency[stored_key]
                    if first.fingerprint != fingerprint:
                        raise StripeFailure(
                            400,
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{ctx.idempotency_key}' if you meant to execute a different "
                            "request.",
                            type="idempotency_error",
                        )
                    return first.status, first.body, first.request_id
                status, body = op(ctx, params, request.path_params.get("id", ""))
                stored = True
            except StripeFailure as failure:
                status, body, stored = failure.status, failure.body, failure.stored
            text = json.dumps(body)
            if stored and stored_key is not None:
                self._idempotency[stored_key] = _Stored(fingerprint, status, text, ctx.request_id)
            return status, text, None

    def _take_fault(self, endpoint: str, record: RecordedRequest) -> _Fault | None:
        for fault in self._faults:
            if fault.endpoint in (None, endpoint):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)  # safe: the loop ends here
                record.fault = fault.kind
                return fault
        if self.failure_ratio and self._random.random() < self.failure_ratio:
            record.fault = "random"
            return _Fault("fail", 0)
        return None

    def _authenticate(self, api_key: str | None) -> str:
        if api_key is None:
            raise StripeFailure(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth "
                "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        valid = api_key in self._api_keys if self._api_keys is not None else None
        if valid is False or (valid is None and not api_key.startswith("sk_test_")):
            raise StripeFailure(401, f"Invalid API Key provided: {api_key[:8]}****{api_key[-4:]}")
        return api_key

    @staticmethod
    def _check_idempotency_key(api_key: str, key: str | None) -> tuple[str, str] | None:
        if key is None:
            return None
        if not key or len(key) > _MAX_IDEMPOTENCY_KEY:
            raise StripeFailure(
                400,
                "Invalid idempotency key: must be between 1 and "
                f"{_MAX_IDEMPOTENCY_KEY} characters.",
                param="idempotency_key",
            )
        return (api_key, key)  # keys belong to an API key (an account), not to the world

    def _answer(
        self,
        record: RecordedRequest,
        ctx: Context,
        status: int,
        body: dict[str, Any] | str,
        should_retry: bool | None = None,
        *,
        replayed: str | None = None,
    ) -> Response:
        record.status = status
        record.replayed = replayed is not None
        response = _json(body, status, ctx.request_id)
        if ctx.idempotency_key is not None and record.method == "POST":
            response.headers["Idempotency-Key"] = ctx.idempotency_key
        if replayed is not None:
            response.headers["Idempotent-Replayed"] = "true"
            response.headers["Original-Request"] = replayed
        if should_retry is not None:
            response.headers["Stripe-Should-Retry"] = "true" if should_retry else "false"
        return response


def _positive(n: int) -> None:
    if n < 1:
        raise ValueError("n must be at least 1")


def _bearer(header: str | None) -> str | None:
    if header is None or not header.startswith("Bearer "):
        return None
    return header.removeprefix("Bearer ").strip() or None


def _json(body: dict[str, Any] | str, status: int, request_id: str) -> Response:
    return Response(
        body if isinstance(body, str) else json.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"Request-Id": request_id, "Stripe-Version": API_VERSION},
    )


def _injected(status: int) -> tuple[int, dict[str, Any]]:
    if status == 429:
        failure = StripeFailure(
            429,
            "Too many requests hit the API too quickly. (injected by FakeStripe)",
            code="rate_limit",
        )
    elif status == 409:
        failure = StripeFailure(
            409,
            "This object cannot be accessed right now because another API request or Stripe "
            "process is currently accessing it. (injected by FakeStripe)",
            code="lock_timeout",
        )
    elif status >= 500:
        failure = StripeFailure(
            status, "An unknown error occurred. (injected by FakeStripe)", type="api_error"
        )
    else:
        failure = StripeFailure(status, "Injected failure. (injected by FakeStripe)")
    return failure.status, failure.body


@dataclass(frozen=True)
class FakeStripeServer:
    url: str  # pass as StripeConfig.api_base
    state: FakeStripe


@contextmanager
def serve_fake_stripe(
    state: FakeStripe | None = None, *, startup_timeout: float = 10.0
) -> Iterator[FakeStripeServer]:
    """Serve a FakeStripe over real HTTP on 127.0.0.1 (a free port) until the block ends."""
    state = state if state is not None else FakeStripe()
    with serve_in_thread(
        state.app, name="fake-stripe", on_stop=state._release_held, startup_timeout=startup_timeout
    ) as url:
        yield FakeStripeServer(url=url, state=state)
