"""Orders, their fulfilments (one per cooperative), lines and status history."""

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
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, Timestamps, UUIDPrimaryKey, text_enum


class OrderStatus(enum.StrEnum):
    awaiting_payment = "awaiting_payment"
    confirmed = "confirmed"
    shipped = "shipped"
    delivered = "delivered"
    cancelled = "cancelled"


class PaymentStatus(enum.StrEnum):
    unpaid = "unpaid"
    paid = "paid"
    partially_refunded = "partially_refunded"
    refunded = "refunded"


class PaymentMethod(enum.StrEnum):
    stripe = "stripe"
    cod = "cod"


class DeliveryType(enum.StrEnum):
    home = "home"
    pickup = "pickup"


class FulfilmentStatus(enum.StrEnum):
    awaiting_payment = "awaiting_payment"
    ready = "ready"
    shipped = "shipped"
    delivered = "delivered"
    cancelled = "cancelled"


class Order(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("paid_fen >= 0 AND paid_fen <= total_fen", name="paid_within_total"),
        CheckConstraint(
            "refunded_fen >= 0 AND refunded_fen <= paid_fen", name="refunded_within_paid"
        ),
        Index(
            "ix_orders_buyer_id_created_at", "buyer_id", text("created_at DESC"), text("id DESC")
        ),
        Index(
            "ix_orders_reserved_until",
            "reserved_until",
            postgresql_where=text("status = 'awaiting_payment'"),
        ),
    )

    buyer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    status: Mapped[OrderStatus] = mapped_column(text_enum(OrderStatus, "order_status"))
    payment_method: Mapped[PaymentMethod] = mapped_column(
        text_enum(PaymentMethod, "payment_method")
    )
    payment_status: Mapped[PaymentStatus] = mapped_column(
        text_enum(PaymentStatus, "order_payment_status"),
        default=PaymentStatus.unpaid,
        server_default=PaymentStatus.unpaid.value,
    )
    currency: Mapped[str] = mapped_column(CHAR(3))
    items_fen: Mapped[int] = mapped_column(BigInteger)
    fee_fen: Mapped[int] = mapped_column(BigInteger, comment="Platform fees of all lines.")
    total_fen: Mapped[int] = mapped_column(BigInteger, comment="What the buyer pays.")
    paid_fen: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    delivery_type: Mapped[DeliveryType] = mapped_column(text_enum(DeliveryType, "delivery_type"))
    delivery_address: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    pickup_site_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("service_sites.id"))
    reserved_until: Mapped[datetime | None] = mapped_column(
        comment="An unpaid order's stock returns after this moment."
    )
    settlement_hold: Mapped[bool] = mapped_column(
        default=False, server_default="false", comment="A dispute holds the settlement."
    )
    paid_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    cancel_reason: Mapped[str | None] = mapped_column(Text)


class Fulfilment(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "fulfilments"
    __table_args__ = (
        UniqueConstraint("order_id", "cooperative_id"),
        Index(
            "ix_fulfilments_cooperative_id_status",
            "cooperative_id",
            "status",
            text("created_at DESC"),
        ),
        # What income recognition still has to take: small, whatever the history.
        Index(
            "ix_fulfilments_unrecognised",
            "delivered_at",
            "id",
            postgresql_where=text("status = 'delivered' AND recognised_at IS NULL"),
        ),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"))
    cooperative_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cooperatives.id"))
    county_code: Mapped[str] = mapped_column(CHAR(12))
    status: Mapped[FulfilmentStatus] = mapped_column(
        text_enum(FulfilmentStatus, "fulfilment_status")
    )
    items_fen: Mapped[int] = mapped_column(BigInteger)
    delivered_at: Mapped[datetime | None] = mapped_column(
        comment="When its last parcel arrived (by the carrier's or the site's clock)."
    )
    recognised_at: Mapped[datetime | None] = mapped_column(
        comment="When its lines entered the attribution ledger."
    )


class OrderLine(UUIDPrimaryKey, Base):
    __tablename__ = "order_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("refunded_quantity BETWEEN 0 AND quantity", name="refunded_quantity_range"),
        CheckConstraint("refunded_fen BETWEEN 0 AND gross_fen", name="refunded_fen_range"),
        CheckConstraint("fee_fen BETWEEN 0 AND gross_fen", name="fee_within_gross"),
        Index("ix_order_lines_order_id", "order_id"),
        Index("ix_order_lines_fulfilment_id", "fulfilment_id"),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"))
    fulfilment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fulfilments.id"))
    position: Mapped[int] = mapped_column(SmallInteger)
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id"))
    cooperative_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cooperatives.id"))
    county_code: Mapped[str] = mapped_column(CHAR(12))
    title: Mapped[str] = mapped_column(String(200))
    unit: Mapped[str] = mapped_column(String(20))
    unit_price_fen: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[int] = mapped_column(Integer)
    gross_fen: Mapped[int] = mapped_column(BigInteger)
    certified: Mapped[bool]
    fee_bp: Mapped[int] = mapped_column(SmallInteger)
    fee_fen: Mapped[int] = mapped_column(BigInteger)
    share_set_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("supply_share_sets.id"))
    shares: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, comment="[{household_id, basis_points}] in force when the line was paid."
    )
    shares_at: Mapped[datetime]
    refunded_quantity: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class OrderEvent(Base):
    """Append-only history of an order's status."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(server_default=func.now())
