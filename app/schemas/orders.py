"""Checkout, orders, fulfilments and refunds as the API reads and writes them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.schemas.common import RequestModel
from app.schemas.regions import RegionCode
from app.schemas.users import Phone

Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class CheckoutLine(RequestModel):
    product_id: uuid.UUID
    quantity: int = Field(ge=1, le=10_000)


class Address(RequestModel):
    recipient: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)
    ]
    phone: Phone
    province: Line
    city: Line
    county: Line
    street: Line = Field(description="Township, village, street and house.")
    region_code: RegionCode | None = Field(default=None, description="Division code, if known.")
    postal_code: Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")] | None = None


class HomeDelivery(BaseModel):
    # Not a RequestModel: its "*" validator may not run on a discriminator field.
    model_config = ConfigDict(extra="forbid")

    type: Literal["home"]
    address: Address


class PickupDelivery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["pickup"]
    site_id: uuid.UUID


class CheckoutRequest(RequestModel):
    lines: list[CheckoutLine] = Field(min_length=1, max_length=50)
    delivery: Annotated[HomeDelivery | PickupDelivery, Field(discriminator="type")]
    payment_method: Literal["stripe", "cod"]


class LineOut(BaseModel):
    id: uuid.UUID
    product_id: uuid.UUID
    title: str
    unit: str
    unit_price_fen: int
    quantity: int
    gross_fen: int
    refunded_quantity: int
    refunded_fen: int


class FulfilmentOut(BaseModel):
    id: uuid.UUID
    cooperative_id: uuid.UUID
    status: Literal["awaiting_payment", "ready", "shipped", "delivered", "cancelled"]
    items_fen: int
    lines: list[LineOut]


class DeliveryOut(BaseModel):
    type: Literal["home", "pickup"]
    address: dict[str, str | None] | None
    site_id: uuid.UUID | None


class OrderOut(BaseModel):
    id: uuid.UUID
    status: Literal["awaiting_payment", "confirmed", "shipped", "delivered", "cancelled"]
    payment_method: Literal["stripe", "cod"]
    payment_status: Literal["unpaid", "paid", "partially_refunded", "refunded"]
    currency: str
    items_fen: int
    total_fen: int
    paid_fen: int
    refunded_fen: int
    delivery: DeliveryOut
    reserved_until: datetime | None = Field(description="Unpaid Stripe orders expire then.")
    settlement_hold: bool
    fulfilments: list[FulfilmentOut]
    created_at: datetime
    updated_at: datetime


class CheckoutOut(OrderOut):
    client_secret: str | None = Field(
        description="For Stripe orders: confirm the PaymentIntent with it in the storefront."
    )


class OrderSummary(BaseModel):
    id: uuid.UUID
    status: str
    payment_method: str
    payment_status: str
    currency: str
    total_fen: int
    created_at: datetime


class RefundLineIn(RequestModel):
    line_id: uuid.UUID
    quantity: int = Field(ge=1, le=10_000)


class RefundIn(RequestModel):
    lines: list[RefundLineIn] | None = Field(default=None, min_length=1, max_length=50)
    amount_fen: int | None = Field(default=None, ge=1, le=10**12)
    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)
    ] = "refund"


class RefundOut(BaseModel):
    id: uuid.UUID
    order_id: uuid.UUID
    amount_fen: int
    currency: str
    state: Literal["pending", "succeeded", "failed", "canceled"]
    reason: str
    created_at: datetime


class FulfilmentQueueItem(BaseModel):
    id: uuid.UUID
    order_id: uuid.UUID
    cooperative_id: uuid.UUID
    status: str
    items_fen: int
    created_at: datetime


class WebhookAck(BaseModel):
    received: bool
    duplicate: bool
    outcome: str
