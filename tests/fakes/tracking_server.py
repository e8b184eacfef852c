"""A local fake of AfterShip's and Kuaidi100's tracking APIs, with fault injection.

`FakeTracking` holds the parcels and the knobs and is an ASGI app (`.app`);
`serve_fake_tracking()` runs it with uvicorn on a free 127.0.0.1 port in a
background thread, so the adapters' real HTTP, timeouts and error handling run:

    with serve_fake_tracking() as fake:
        aftership = AfterShipConfig(api_key=AFTERSHIP_API_KEY, webhook_secret=None,
                                    api_base=fake.url + "/aftership")
        kuaidi100 = Kuaidi100Config(customer=KUAIDI100_CUSTOMER, key=KUAIDI100_KEY,
                                    salt=None, api_base=fake.url + "/kuaidi100")
        fake.state.set_parcel("yto", "YT1234567890123",
                              (TrackingStatus.in_transit, "2026-11-20T08:00:00Z", "上海市"))
        fake.state.rate_limit_next(1, retry_after=30)
        fake.state.calls[AFTERSHIP_TRACKINGS]

One parcel serves both providers, each in its own words (tracking_pushes has the
translation tables and builds the bodies, as it does for pushes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from services.tracking.carriers import by_aftership_slug, by_kuaidi100_code
from services.tracking.kuaidi100 import BEIJING, sign_md5
from services.tracking.vocabulary import TrackingStatus
from tests.fakes.serving import serve_in_thread
from tests.fakes.tracking_pushes import (
    AFTERSHIP_SUBTAGS,
    KUAIDI100_CODES,
    aftership_tracking,
    beijing_time,
    kuaidi100_result,
)

AFTERSHIP_API_KEY = "as-test-key"
KUAIDI100_CUSTOMER = "TESTCUSTOMER"
KUAIDI100_KEY = "kuaidi100-test-key"
AFTERSHIP_TRACKINGS = "GET /aftership/trackings"
KUAIDI100_QUERY = "POST /kuaidi100/poll/query.do"


@dataclass(frozen=True)
class Scan:
    """One scan of a fake parcel, in our vocabulary."""

    status: TrackingStatus
    at: datetime  # timezone-aware
    location: str | None = None


# A Scan, or (status, when[, location]) with `when` a datetime or ISO 8601 text.
ScanLike = Scan | tuple[TrackingStatus, datetime | str] | tuple[TrackingStatus, datetime | str, str]


@dataclass
class RecordedRequest:
    """One request as the fake saw it, for assertions."""

    endpoint: str  # the key of FakeTracking.calls
    params: dict[str, str]  # query (AfterShip) or form (Kuaidi100)
    credential: str | None  # AfterShip's as-api-key, Kuaidi100's customer
    at: float
    status: int = 0  # the answer's HTTP status, once given
    fault: str | None = None  # "fail", "rate_limit", "timeout" when one was injected


@dataclass
class _Fault:
    kind: str
    remaining: int
    endpoint: str | None
    status: int = 500
    seconds: float = 0.0
    retry_after: float | None = None
    reset_in: float | None = None


class FakeTracking:
    """The fake providers' parcels, and the knobs that make them misbehave."""

    def __init__(
        self,
        *,
        aftership_api_key: str = AFTERSHIP_API_KEY,
        kuaidi100_customer: str = KUAIDI100_CUSTOMER,
        kuaidi100_key: str = KUAIDI100_KEY,
        keep_requests: int | None = 10_000,
    ) -> None:
        # The server thread and the test thread share this state; every operation
        # on it is short and synchronous, so one lock is enough.
        self._lock = threading.RLock()
        self._aftership_api_key = aftership_api_key
        self._kuaidi100_account = (kuaidi100_customer, kuaidi100_key)
        self.parcels: dict[tuple[str, str], list[Scan]] = {}
        self._faults: deque[_Fault] = deque()
        # Set when the server stops, so held requests end at once (see _hold).
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.calls: Counter[str] = Counter()  # per endpoint, faults included
        self.requests: deque[RecordedRequest] = deque(maxlen=keep_requests)
        self.app = Starlette(
            routes=[
                Route("/aftership/trackings", self._aftership_trackings, methods=["GET"]),
                Route("/kuaidi100/poll/query.do", self._kuaidi100_query, methods=["POST"]),
            ]
        )

    # -- parcels -----------------------------------------------------------------

    def set_parcel(self, carrier: str, number: str, *scans: ScanLike) -> None:
        """Register (or replace) a parcel with its scans, in any order."""
        with self._lock:
            self.parcels[(carrier, number)] = sorted(map(_scan, scans), key=lambda s: s.at)

    def remove_parcel(self, carrier: str, number: str) -> None:
        with self._lock:
            self.parcels.pop((carrier, number), None)

    # -- knobs -------------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 500, *, endpoint: str | None = None) -> None:
        """Answer the next `n` calls (to `endpoint`, e.g. AFTERSHIP_TRACKINGS) with `status`."""
        self._add(_Fault("fail", _positive(n), endpoint, status=status))

    def rate_limit_next(
        self,
        n: int = 1,
        retry_after: float | None = 30,
        *,
        reset_in: float | None = None,
        endpoint: str | None = None,
    ) -> None:
        """Answer the next `n` calls 429, saying when to come back.

        Retry-After carries `retry_after` seconds, X-RateLimit-Reset the Unix time
        `reset_in` seconds from now; with both None the 429 says nothing.
        """
        self._add(
            _Fault("rate_limit", _positive(n), endpoint, retry_after=retry_after, reset_in=reset_in)
        )

    def timeout_next(
        self, n: int = 1, seconds: float = 5.0, *, endpoint: str | None = None
    ) -> None:
        """Hold the next `n` calls for `seconds` (longer than the client's timeout), then 504."""
        self._add(_Fault("timeout", _positive(n), endpoint, seconds=seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget parcels, faults and counters."""
        with self._lock:
            self._faults.clear()
            self.parcels.clear()
            self.calls.clear()
            self.requests.clear()

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    # -- AfterShip ---------------------------------------------------------------

    async def _aftership_trackings(self, request: Request) -> Response:
        params = dict(request.query_params)
        record = self._record(AFTERSHIP_TRACKINGS, params, request.headers.get("as-api-key"))
        fault = await self._fault(record)
        if fault is not None:
            return _answer(record, fault)
        if record.credential != self._aftership_api_key:
            return _answer(record, _aftership_error(401, "Unauthorized", "Invalid API key."))
        carrier = by_aftership_slug(params.get("slug", ""))
        numbers = [n for n in params.get("tracking_numbers", "").split(",") if n]
        trackings = []
        with self._lock:
            for number in numbers:
                scans = self.parcels.get((carrier.code, number)) if carrier else None
                if scans is not None and carrier is not None:
                    trackings.append(_aftership_tracking(carrier.code, number, scans))
        body = {
            "meta": {"code": 200, "message": "", "type": "OK"},
            "data": {"trackings": trackings, "pagination": {"total": len(trackings)}},
        }
        return _answer(record, JSONResponse(body))

    # -- Kuaidi100 ---------------------------------------------------------------

    async def _kuaidi100_query(self, request: Request) -> Response:
        # Parsed by hand: Starlette's form parser needs python-multipart, which the
        # project does not otherwise need.
        fields = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        form = {key: values[-1] for key, values in fields.items()}
        record = self._record(KUAIDI100_QUERY, form, form.get("customer"))
        fault = await self._fault(record)
        if fault is not None:
            return _answer(record, fault)
        customer, key = self._kuaidi100_account
        param = form.get("param", "")
        # Kuaidi100 answers every refusal with HTTP 200 and a returnCode.
        if record.credential != customer or form.get("sign") != sign_md5(param + key + customer):
            return _answer(record, _kuaidi100_error("503", "验证签名失败"))
        try:
            query = json.loads(param)
            carrier = by_kuaidi100_code(query["com"])
            number = str(query["num"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return _answer(record, _kuaidi100_error("400", "提交的数据不完整"))
        if carrier is None:
            return _answer(record, _kuaidi100_error("400", "找不到对应公司"))
        # SF Express and ZTO answer only a query that names the recipient's phone.
        if carrier.query_needs_phone and not str(query.get("phone", "")).isdigit():
            return _answer(record, _kuaidi100_error("408", "手机号码后四位不正确"))
        with self._lock:
            scans = self.parcels.get((carrier.code, number))
        if scans is None:
            return _answer(record, _kuaidi100_error("500", "查询无结果，请隔段时间再查"))
        items = [
            (KUAIDI100_CODES[scan.status], beijing_time(scan.at), scan.location)
            for scan in reversed(scans)  # Kuaidi100 lists the newest first
        ]
        body = kuaidi100_result(carrier=carrier.code, number=number, items=items)
        return _answer(record, JSONResponse(body))

    # -- plumbing ----------------------------------------------------------------

    def _record(
        self, endpoint: str, params: dict[str, str], credential: str | None
    ) -> RecordedRequest:
        record = RecordedRequest(endpoint, params, credential, at=time.time())
        with self._lock:
            self.calls[endpoint] += 1
            self.requests.append(record)
        return record

    async def _fault(self, record: RecordedRequest) -> Response | None:
        """The injected answer for this call, if a fault is due (after holding it, for timeouts)."""
        with self._lock:
            fault = next((f for f in self._faults if f.endpoint in (None, record.endpoint)), None)
            if fault is None:
                return None
            fault.remaining -= 1
            if fault.remaining == 0:
                self._faults.remove(fault)
            record.fault = fault.kind
        if fault.kind == "timeout":
            await self._hold(fault.seconds)
            return PlainTextResponse("upstream timed out (injected)", status_code=504)
        if fault.kind == "rate_limit":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            if fault.reset_in is not None:
                headers["X-RateLimit-Reset"] = str(int(time.time() + fault.reset_in))
            error = _aftership_error(429, "TooManyRequests", "Rate limit exceeded (injected).")
            error.headers.update(headers)
            return error
        if record.endpoint == AFTERSHIP_TRACKINGS:
            return _aftership_error(fault.status, "InternalError", "Injected failure.")
        return PlainTextResponse("injected failure", status_code=fault.status)

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


def _scan(value: ScanLike) -> Scan:
    if isinstance(value, Scan):
        return value
    status, when, *rest = value
    at = datetime.fromisoformat(when) if isinstance(when, str) else when
    if at.tzinfo is None:
        raise ValueError("scan times must be timezone-aware")
    return Scan(TrackingStatus(status), at, rest[0] if rest else None)


def _aftership_tracking(carrier: str, number: str, scans: Sequence[Scan]) -> dict[str, Any]:
    # AfterShip reports checkpoint times in the place's local time, with its offset.
    checkpoints = [
        (AFTERSHIP_SUBTAGS[s.status], s.at.astimezone(BEIJING).isoformat(), s.location)
        for s in scans
    ]
    return aftership_tracking(carrier=carrier, number=number, checkpoints=checkpoints)


def _aftership_error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"meta": {"code": status, "message": message, "type": kind}, "data": {}},
        status_code=status,
    )


def _kuaidi100_error(code: str, message: str) -> JSONResponse:
    return JSONResponse({"result": False, "returnCode": code, "message": message})


def _answer(record: RecordedRequest, response: Response) -> Response:
    record.status = response.status_code
    return response


def _positive(n: int) -> int:
    if n < 1:
        raise ValueError("n must be at least 1")
    return n


@dataclass(frozen=True)
class FakeTrackingServer:
    url: str  # api_base = url + "/aftership" or url + "/kuaidi100"
    state: FakeTracking

    @property
    def aftership_base(self) -> str:
        return self.url + "/aftership"

    @property
    def kuaidi100_base(self) -> str:
        return self.url + "/kuaidi100"


@contextmanager
def serve_fake_tracking(
    state: FakeTracking | None = None, *, startup_timeout: float = 10.0
) -> Iterator[FakeTrackingServer]:
    """Serve a FakeTracking over real HTTP on 127.0.0.1 (a free port) until the block ends."""
    state = state if state is not None else FakeTracking()
    with serve_in_thread(
        state.app,
        name="fake-tracking",
        on_stop=state._release_held,
        startup_timeout=startup_timeout,
    ) as url:
        yield FakeTrackingServer(url=url, state=state)
