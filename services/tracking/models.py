"""Shipments of a fulfilment, their event timeline, the webhook inbox and provider pauses."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    CHAR,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, Timestamps, UUIDPrimaryKey, text_enum
from services.tracking.vocabulary import TrackingStatus


class Source(enum.StrEnum):
    """Who reported a shipment event: a provider (push or poll) or a person."""

    aftership = "aftership"
    kuaidi100 = "kuaidi100"
    manual = "manual"


class EventSource(enum.StrEnum):
    """Who reported an event: a provider, a person, or the marketplace itself (an expiry)."""

    aftership = "aftership"
    kuaidi100 = "kuaidi100"
    manual = "manual"
    system = "system"


class ManualEvent(enum.StrEnum):
    """What a cooperative manager or a village site operator records by hand."""

    handed_over = "handed_over"  # given to the courier
    received_at_site = "received_at_site"  # arrived at the village service site
    picked_up = "picked_up"  # the buyer took it from the site
    delivered = "delivered"  # delivered by hand (the cooperative's own round)
    failed_attempt = "failed_attempt"
    cash_collected = "cash_collected"  # cash on delivery: the money was taken
    refused = "refused"  # cash on delivery: the buyer refused the parcel


ACTIVE_STATUSES = tuple(
    s.value
    for s in TrackingStatus
    if s not in (TrackingStatus.delivered, TrackingStatus.returned, TrackingStatus.expired)
)


class Shipment(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "shipments"
    __table_args__ = (
        # Unique per carrier: a provider's report names a parcel by carrier and number.
        UniqueConstraint("carrier", "tracking_number"),
        Index("ix_shipments_fulfilment_id", "fulfilment_id"),
        Index("ix_shipments_order_id", "order_id"),
        Index("ix_shipments_cooperative_id_status", "cooperative_id", "status"),
        Index(
            "ix_shipments_pickup_site_id",
            "pickup_site_id",
            postgresql_where=text("pickup_site_id IS NOT NULL"),
        ),
        Index(
            "ix_shipments_provider_next_poll_at",
            "provider",
            "next_poll_at",
            postgresql_where=text("next_poll_at IS NOT NULL"),
        ),
    )

    fulfilment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fulfilments.id"))
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"))
    cooperative_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cooperatives.id"))
    county_code: Mapped[str] = mapped_column(CHAR(12))
    carrier: Mapped[str] = mapped_column(String(20))
    tracking_number: Mapped[str] = mapped_column(String(40))
    provider: Mapped[Source] = mapped_column(text_enum(Source, "tracking_source"))
    status: Mapped[TrackingStatus] = mapped_column(
        text_enum(TrackingStatus, "tracking_status", length=30)
    )
    status_at: Mapped[datetime | None] = mapped_column(
        comment="When the event that set the current status happened."
    )
    last_event_at: Mapped[datetime | None] = mapped_column(comment="The latest event's time.")
    delivered_at: Mapped[datetime | None]
    pickup_site_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("service_sites.id"))
    next_poll_at: Mapped[datetime | None] = mapped_column(
        comment="When the poller asks the provider next; NULL: not polled."
    )
    poll_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))


class ShipmentEvent(Base):
    """Append-only timeline; one row per distinct report, however often it arrives."""

    __tablename__ = "shipment_events"
    __table_args__ = (
        UniqueConstraint("shipment_id", "dedupe_key"),
        Index("ix_shipment_events_shipment_id_occurred_at", "shipment_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    shipment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shipments.id"))
    county_code: Mapped[str] = mapped_column(CHAR(12))
    source: Mapped[EventSource] = mapped_column(text_enum(EventSource, "event_source"))
    kind: Mapped[ManualEvent | None] = mapped_column(
        text_enum(ManualEvent, "manual_event", length=30)
    )
    status: Mapped[TrackingStatus] = mapped_column(
        text_enum(TrackingStatus, "tracking_status", length=30)
    )
    raw_status: Mapped[str] = mapped_column(String(80))
    occurred_at: Mapped[datetime]
    location: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    dedupe_key: Mapped[str] = mapped_column(
        CHAR(32), comment="Digest of (source status, time, location), or of an Idempotency-Key."
    )
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())


class TrackingPush(Base):
    """The webhook inbox: each provider delivery id once, so a redelivery is cheap to spot."""

    __tablename__ = "tracking_pushes"
    __table_args__ = (Index("ix_tracking_pushes_received_at", "received_at"),)

    provider: Mapped[Source] = mapped_column(text_enum(Source, "tracking_source"), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    tracking_number: Mapped[str | None] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ProviderPause(Base):
    """Per provider: when the poller may call it again (429), and its next free call slot."""

    __tablename__ = "tracking_providers"

    provider: Mapped[Source] = mapped_column(text_enum(Source, "tracking_source"), primary_key=True)
    paused_until: Mapped[datetime | None]
    next_slot_at: Mapped[datetime | None] = mapped_column(
        comment="The poll dispatcher spaces calls from here, so a provider's rate holds."
    )
