"""Shipments, their timelines and manual events as the API reads and writes them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from app.schemas.common import RequestModel

TrackingStatusName = Literal[
    "pending",
    "info_received",
    "in_transit",
    "out_for_delivery",
    "available_for_pickup",
    "delivered",
    "failed_attempt",
    "exception",
    "returned",
    "expired",
]
ProviderName = Literal["aftership", "kuaidi100", "manual"]
# Who reported an event: also `system` for an expiry the marketplace records.
EventSourceName = Literal["aftership", "kuaidi100", "manual", "system"]
ManualEventName = Literal[
    "handed_over",
    "received_at_site",
    "picked_up",
    "delivered",
    "failed_attempt",
    "cash_collected",
    "refused",
]
Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ShipmentIn(RequestModel):
    carrier: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]
    tracking_number: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)
    ]
    provider: ProviderName | None = Field(
        default=None,
        description="Who reports this parcel's events; default: the configured provider.",
    )


class ManualEventIn(RequestModel):
    kind: ManualEventName
    occurred_at: AwareDatetime | None = Field(default=None, description="Default: now.")
    location: Text200 | None = None
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None
    amount_fen: int | None = Field(
        default=None, ge=1, le=10**12, description="For cash_collected: the cash taken, in fen."
    )


class ShipmentEventOut(BaseModel):
    status: TrackingStatusName
    source: EventSourceName
    kind: ManualEventName | None
    raw_status: str
    occurred_at: datetime
    location: str | None
    description: str | None


class ShipmentSummary(BaseModel):
    id: uuid.UUID
    order_id: uuid.UUID
    fulfilment_id: uuid.UUID
    carrier: str
    tracking_number: str
    provider: ProviderName
    status: TrackingStatusName
    status_at: datetime | None
    last_event_at: datetime | None
    delivered_at: datetime | None
    pickup_site_id: uuid.UUID | None
    created_at: datetime


class ShipmentOut(ShipmentSummary):
    events: list[ShipmentEventOut] = Field(description="The timeline, by when things happened.")


class ShipmentAlert(ShipmentSummary):
    reason: Literal["exception", "failed_attempt", "returned", "expired", "no-news"]


class OrderTrackingOut(BaseModel):
    order_id: uuid.UUID
    order_status: str
    shipments: list[ShipmentOut]


class TrackingAck(BaseModel):
    received: bool
    outcome: str
