"""A payment per order, its refunds, and every Stripe event received (the inbox)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CHAR,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, Timestamps, UUIDPrimaryKey, text_enum


class PaymentState(enum.StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


class Provider(enum.StrEnum):
    stripe = "stripe"
    cash = "cash"


class Payment(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "payments"

    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), unique=True)
    provider: Mapped[Provider] = mapped_column(text_enum(Provider, "payment_provider"))
    provider_payment_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    state: Mapped[PaymentState] = mapped_column(text_enum(PaymentState, "payment_state"))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(CHAR(3))
    failures: Mapped[int] = mapped_column(default=0, server_default="0")
    last_failure: Mapped[str | None] = mapped_column(Text)
    succeeded_at: Mapped[datetime | None]


class RefundState(enum.StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


class Refund(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("amount_fen > 0", name="amount_positive"),
        Index("ix_refunds_order_id", "order_id"),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"))
    payment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payments.id"))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(CHAR(3))
    state: Mapped[RefundState] = mapped_column(text_enum(RefundState, "refund_state"))
    provider_refund_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    allocation: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, comment="[{line_id, quantity, amount_fen}]: how the amount falls on lines."
    )
    requested_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))


class StripeEvent(Base):
    """Each Stripe event once, by its id: duplicates are recognised, not re-applied."""

    __tablename__ = "stripe_events"
    __table_args__ = (Index("ix_stripe_events_object_id", "object_id"),)

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    object_id: Mapped[str | None] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(comment="When Stripe created the event.")
    livemode: Mapped[bool]
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    outcome: Mapped[str] = mapped_column(String(60))
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
