"""The one tracking vocabulary every provider adapter translates into.

Adapters (`aftership.py`, `kuaidi100.py`) take a provider's raw push or poll
answer and return `TrackingUpdate`s in these terms; the service never sees a
provider's own codes except as `Checkpoint.raw_status`, kept for the record.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import httpx


class TrackingStatus(enum.StrEnum):
    pending = "pending"
    info_received = "info_received"
    in_transit = "in_transit"
    out_for_delivery = "out_for_delivery"
    available_for_pickup = "available_for_pickup"
    delivered = "delivered"
    failed_attempt = "failed_attempt"
    exception = "exception"
    returned = "returned"
    expired = "expired"


# After these a parcel is no longer polled (a return may still be pushed after delivery).
FINISHED = frozenset({TrackingStatus.delivered, TrackingStatus.returned, TrackingStatus.expired})


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One scan of a parcel, in our vocabulary, with the provider's own code beside it."""

    status: TrackingStatus
    raw_status: str  # the provider's code, e.g. "InTransit_007" or "kuaidi100:0"
    occurred_at: datetime  # timezone-aware, UTC
    location: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class TrackingUpdate:
    """What a provider said about one parcel: some or all of its checkpoints."""

    provider: str
    carrier: str  # our carrier code (see carriers.py), not the provider's slug
    tracking_number: str
    checkpoints: tuple[Checkpoint, ...]
    delivery_id: str | None = None  # the provider's id of this push, when it gives one
    finished: bool = False  # the provider stopped tracking (kuaidi100 "shutdown")
    extra: Mapping[str, str] = field(default_factory=dict)


class InvalidSignature(Exception):
    """A push whose signature does not verify: answer 400 and store nothing."""


class MalformedPush(Exception):
    """A verified push we cannot read (missing fields, unknown carrier)."""


class ProviderUnavailable(Exception):
    """The provider failed (5xx, timeout, connection error): back off and retry later."""


class RateLimited(Exception):
    """The provider answered 429: wait `retry_after` before asking it anything again."""

    def __init__(self, retry_after: timedelta) -> None:
        super().__init__(f"rate limited for {retry_after}")
        self.retry_after = retry_after


class TrackingNotFound(Exception):
    """The provider does not know this parcel (yet)."""


class Provider(Protocol):
    """A tracking provider adapter.

    `verify` and `parse_push` see the raw body and headers of a webhook;
    `poll` asks the provider about one parcel over the given client and raises
    ProviderUnavailable, RateLimited or TrackingNotFound on trouble.
    """

    name: str

    @property
    def can_push(self) -> bool: ...

    @property
    def can_poll(self) -> bool: ...

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None: ...

    def parse_push(self, body: bytes, headers: Mapping[str, str]) -> list[TrackingUpdate]: ...

    def acknowledgement(self) -> dict[str, object]: ...

    async def poll(
        self,
        client: httpx.AsyncClient,
        carrier: str,
        tracking_number: str,
        *,
        phone: str | None = None,
    ) -> TrackingUpdate:
        """What the provider knows of a parcel; `phone` is the recipient's, for carriers
        whose queries need it."""
        ...
