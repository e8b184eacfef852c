"""Producer organisations and the households that belong to them."""

from __future__ import annotations

import enum
import uuid
from datetime import date

from sqlalchemy import ARRAY, CHAR, Enum, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, Timestamps, UUIDPrimaryKey


class CooperativeKind(enum.StrEnum):
    cooperative = "cooperative"
    household_shop = "household_shop"
    enterprise = "enterprise"


class CooperativeStatus(enum.StrEnum):
    active = "active"
    suspended = "suspended"
    closed = "closed"


class Linkage(enum.StrEnum):
    """Benefit-linkage mechanisms between an organisation and poor households."""

    purchase_order = "purchase_order"
    employment = "employment"
    dividend = "dividend"
    land_lease = "land_lease"


class Cooperative(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "cooperatives"

    county_code: Mapped[str] = mapped_column(CHAR(12), index=True)
    village_code: Mapped[str] = mapped_column(CHAR(12), ForeignKey("regions.code"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[CooperativeKind] = mapped_column(
        Enum(
            CooperativeKind,
            name="cooperative_kind",
            native_enum=False,
            create_constraint=True,
            length=20,
        )
    )
    credit_code: Mapped[str] = mapped_column(
        CHAR(18), unique=True, comment="Unified social credit code."
    )
    status: Mapped[CooperativeStatus] = mapped_column(
        Enum(
            CooperativeStatus,
            name="cooperative_status",
            native_enum=False,
            create_constraint=True,
            length=20,
        ),
        default=CooperativeStatus.active,
        server_default=CooperativeStatus.active.value,
    )
    linkages: Mapped[list[str]] = mapped_column(
        ARRAY(String(20)), default=list, server_default="{}"
    )
    description: Mapped[str | None] = mapped_column(Text)
    contact_phone: Mapped[str | None] = mapped_column(String(32))
    stripe_account_id: Mapped[str | None] = mapped_column(
        String(255), comment="Stripe connected account (acct_...) that receives settlements."
    )


class Membership(Timestamps, Base):
    """A household's membership of a producer organisation."""

    __tablename__ = "cooperative_members"
    __table_args__ = (Index("ix_cooperative_members_household_id", "household_id"),)

    cooperative_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("cooperatives.id"), primary_key=True
    )
    household_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("households.id"), primary_key=True)
    county_code: Mapped[str] = mapped_column(CHAR(12))
    joined_on: Mapped[date]
    left_on: Mapped[date | None]
    linkages: Mapped[list[str]] = mapped_column(
        ARRAY(String(20)), default=list, server_default="{}"
    )
