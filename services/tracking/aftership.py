"""AfterShip at the edge: its webhooks and its trackings API, in our tracking vocabulary.

AfterShip aggregates many carriers behind one API; everything about its wire
format (tags, subtags, slugs, headers, rate-limit answers) stays in this module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from services.tracking.carriers import by_aftership_slug, clean_tracking_number, get_carrier
from services.tracking.vocabulary import (
    Checkpoint,
    InvalidSignature,
    MalformedPush,
    ProviderUnavailable,
    RateLimited,
    TrackingNotFound,
    TrackingStatus,
    TrackingUpdate,
)

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "aftership-hmac-sha256"
API_KEY_HEADER = "as-api-key"
# When a 429 says nothing about when to come back; AfterShip's limits are per second
# or per minute, so a minute is always enough.
DEFAULT_RETRY_AFTER = timedelta(seconds=60)

# AfterShip's tags are its whole status vocabulary (a closed list, documented per API
# version); each checkpoint carries one, refined by a subtag such as "InTransit_007".
TAGS: dict[str, TrackingStatus] = {
    "Pending": TrackingStatus.pending,
    "InfoReceived": TrackingStatus.info_received,
    "InTransit": TrackingStatus.in_transit,
    "OutForDelivery": TrackingStatus.out_for_delivery,
    "AttemptFail": TrackingStatus.failed_attempt,
    "Delivered": TrackingStatus.delivered,
    "AvailableForPickup": TrackingStatus.available_for_pickup,
    "Exception": TrackingStatus.exception,
    "Expired": TrackingStatus.expired,  # no news for 30 days: AfterShip stops tracking
}

# Subtags that mean more than their tag says. A parcel on its way back (or back)
# is a return for us, not an "exception" waiting for a delivery that will not come.
# A refused delivery (Exception_003) stays an exception: it often ends in a return,
# which AfterShip then reports with one of these.
SUBTAGS: dict[str, TrackingStatus] = {
    "Exception_010": TrackingStatus.returned,  # returning to sender
    "Exception_011": TrackingStatus.returned,  # returned to sender
}


def status_of(tag: str | None, subtag: str | None) -> TrackingStatus | None:
    """Our status for a checkpoint's tag and subtag; None when AfterShip says something new.

    A subtag we do not list falls back to its family (the part before "_"), so new
    subtags AfterShip adds to a known tag need no change here. A tag outside the
    documented list is a change of AfterShip's vocabulary that we must look at, not
    guess: the caller refuses the data rather than file the parcel under a wrong status.
    """
    if subtag:
        if subtag in SUBTAGS:
            return SUBTAGS[subtag]
        family = TAGS.get(subtag.split("_", 1)[0])
        if family is not None:
            return family
    return TAGS.get(tag) if tag else None


@dataclass(frozen=True)
class AfterShipConfig:
    api_key: str | None = field(repr=False)  # secrets stay out of logs and tracebacks
    webhook_secret: str | None = field(repr=False)
    api_base: str = "https://api.aftership.com/tracking/2024-04"
    timeout_seconds: float = 10.0


class AfterShip:
    """The AfterShip tracking provider (see `vocabulary.Provider`)."""

    name = "aftership"

    def __init__(self, config: AfterShipConfig) -> None:
        self.config = config

    @property
    def can_push(self) -> bool:
        return bool(self.config.webhook_secret)

    @property
    def can_poll(self) -> bool:
        return bool(self.config.api_key)

    # -- webhooks ----------------------------------------------------------------

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        secret = self.config.webhook_secret
        if not secret:
            raise InvalidSignature("AfterShip webhooks are not configured (no webhook secret)")
        given = _header(headers, SIGNATURE_HEADER)
        if not given:
            raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
        digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        expected = base64.b64encode(digest)
        if not hmac.compare_digest(expected, given.strip().encode()):
            raise InvalidSignature("AfterShip signature does not match the body")

    def parse_push(self, body: bytes, headers: Mapping[str, str]) -> list[TrackingUpdate]:
        try:
            event = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MalformedPush(f"AfterShip push is not JSON: {exc}") from exc
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            raise MalformedPush("AfterShip push without an event name")
        # Other events (estimated delivery revised, pending too long, ...) say
        # nothing about where the parcel is.
        if event["event"] != "tracking_update":
            return []
        event_id = event.get("event_id")
        return [
            tracking_update(
                event.get("msg"), delivery_id=event_id if isinstance(event_id, str) else None
            )
        ]

    def acknowledgement(self) -> dict[str, object]:
        # AfterShip only looks at the status code (2xx); the body is for our logs.
        return {"received": True}

    # -- polling -----------------------------------------------------------------

    async def poll(
        self,
        client: httpx.AsyncClient,
        carrier: str,
        tracking_number: str,
        *,
        phone: str | None = None,  # AfterShip keeps what it needs with the tracking
    ) -> TrackingUpdate:
        if not self.config.api_key:
            raise ProviderUnavailable("AfterShip polling is not configured (no API key)")
        slug = get_carrier(carrier).aftership_slug
        try:
            response = await client.get(
                f"{self.config.api_base}/trackings",
                params={"tracking_numbers": tracking_number, "slug": slug},
                headers={API_KEY_HEADER: self.config.api_key, "Accept": "application/json"},
                timeout=httpx.Timeout(self.config.timeout_seconds),
            )
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(f"AfterShip did not answer in time: {exc!r}") from exc
        except httpx.RequestError as exc:
            raise ProviderUnavailable(f"AfterShip could not be reached: {exc!r}") from exc

        status = response.status_code
        if status == 429:
            raise RateLimited(retry_after(response.headers, now=time.time()))
        if status == 404:
            raise TrackingNotFound(f"AfterShip does not know {slug} {tracking_number}")
        if status >= 500:
            raise ProviderUnavailable(f"AfterShip answered {status}")
        if status != 200:
            # Our request or our key is wrong: retrying will not help, a person must look.
            message = _meta_message(response)
            logger.error(
                "AfterShip refused a tracking request",
                extra={"status": status, "answer": message, "slug": slug},
            )
            raise ProviderUnavailable(f"AfterShip answered {status}: {message}")

        try:
            answer = response.json()
            trackings = answer["data"]["trackings"]
            if not isinstance(trackings, list):
                raise TypeError("data.trackings is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("unreadable AfterShip answer", extra={"error": repr(exc)})
            raise ProviderUnavailable(f"unreadable AfterShip answer: {exc!r}") from exc
        if not trackings:
            raise TrackingNotFound(f"AfterShip does not know {slug} {tracking_number}")
        try:
            return tracking_update(trackings[0])
        except MalformedPush as exc:
            # The same reading as a push, but here it is an answer we asked for:
            # the caller backs off and asks again, and the log says why.
            logger.error("unreadable AfterShip tracking", extra={"error": str(exc)})
            raise ProviderUnavailable(f"unreadable AfterShip tracking: {exc}") from exc


def tracking_update(tracking: object, *, delivery_id: str | None = None) -> TrackingUpdate:
    """A TrackingUpdate from one AfterShip tracking object (a push's `msg`, or a poll answer).

    Checkpoints come back oldest first, as AfterShip lists them. A tracking without
    checkpoints yields none: its top-level tag alone is no scan with a time and
    place, and the service keeps the shipment as it is.
    """
    if not isinstance(tracking, dict):
        raise MalformedPush("AfterShip tracking is not an object")
    slug = _required(tracking, "slug")
    number = _required(tracking, "tracking_number")
    carrier = by_aftership_slug(slug)
    if carrier is None:
        raise MalformedPush(f"AfterShip courier {slug!r} is not one of our carriers")
    raw_checkpoints = tracking.get("checkpoints") or []
    if not isinstance(raw_checkpoints, list):
        raise MalformedPush("AfterShip checkpoints is not a list")
    checkpoints = tuple(_checkpoint(item) for item in raw_checkpoints)
    extra = {
        key: value
        for key in ("id", "tag", "subtag")
        if isinstance(value := tracking.get(key), str) and value
    }
    return TrackingUpdate(
        provider=AfterShip.name,
        carrier=carrier.code,
        tracking_number=clean_tracking_number(number),
        checkpoints=tuple(sorted(checkpoints, key=lambda c: c.occurred_at)),
        delivery_id=delivery_id,
        extra=extra,
    )


def _checkpoint(item: object) -> Checkpoint:
    if not isinstance(item, dict):
        raise MalformedPush("AfterShip checkpoint is not an object")
    tag = _text(item, "tag")
    subtag = _text(item, "subtag")
    status = status_of(tag, subtag)
    if status is None:
        raise MalformedPush(f"unknown AfterShip tag {tag!r} (subtag {subtag!r})")
    when = _required(item, "checkpoint_time")
    return Checkpoint(
        status=status,
        raw_status=subtag or tag or "",
        occurred_at=parse_time(when),
        location=_location(item),
        description=_text(item, "message"),
    )


def parse_time(text: str) -> datetime:
    """An AfterShip time in UTC; without an offset it is taken as UTC already."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise MalformedPush(f"unreadable AfterShip time {text!r}") from exc
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _location(item: Mapping[str, Any]) -> str | None:
    location = _text(item, "location")
    if location:
        return location
    # Older API versions call the country country_iso3, 2024-04 country_region.
    country = _text(item, "country_region") or _text(item, "country_iso3")
    parts = [_text(item, "city"), _text(item, "state"), country]
    return ", ".join(part for part in parts if part) or None


def _text(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedPush(f"AfterShip field {key!r} is not text")
    return value.strip() or None if value is not None else None


def _required(item: Mapping[str, Any], key: str) -> str:
    value = _text(item, key)
    if value is None:
        raise MalformedPush(f"AfterShip field {key!r} is missing")
    return value


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Starlette's Headers already ignore case; a plain dict from a test or a job does not.
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _meta_message(response: httpx.Response) -> str:
    try:
        meta = response.json()["meta"]
        return f"{meta.get('code')} {meta.get('type', '')} {meta.get('message', '')}".strip()
    except (ValueError, KeyError, TypeError, AttributeError):
        return response.text[:200]


def retry_after(headers: Mapping[str, str], *, now: float) -> timedelta:
    """How long a 429 asks us to wait.

    Retry-After (seconds or an HTTP date) when given; else AfterShip's
    X-RateLimit-Reset, the Unix time its window reopens; else a minute.
    """
    value = _header(headers, "retry-after")
    if value:
        try:
            return _at_least_a_second(float(value))
        except ValueError:
            pass
        try:
            return _at_least_a_second(parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError):
            pass
    reset = _header(headers, "x-ratelimit-reset")
    if reset:
        try:
            return _at_least_a_second(float(reset) - now)
        except ValueError:
            pass
    return DEFAULT_RETRY_AFTER


def _at_least_a_second(seconds: float) -> timedelta:
    # A window that already reopened (clock skew) still deserves a short pause,
    # and a nonsense value (NaN, inf) the default one.
    if not math.isfinite(seconds):
        return DEFAULT_RETRY_AFTER
    return timedelta(seconds=max(1.0, seconds))
