"""The attribution ledger, recognitions, flags with their rulings, and payouts.

`ledger_entries` is append-only: the database itself refuses UPDATE, DELETE and
TRUNCATE on it (a trigger, added by migration 0006). Corrections are new rows.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CHAR,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, Timestamps, UUIDPrimaryKey, text_enum


class EntryKind(enum.StrEnum):
    recognition = "recognition"  # the line's share, when its fulfilment is delivered
    adjustment = "adjustment"  # a refund (or a failed refund) after recognition


class LedgerEntry(Base):
    """One party's part of one order line: a household's, or the cooperative's (no household)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_line_id", "line_id"),
        Index(
            "ix_ledger_entries_household_id_year",
            "household_id",
            "year",
            postgresql_where=text("household_id IS NOT NULL"),
        ),
        Index("ix_ledger_entries_cooperative_id_effective_at", "cooperative_id", "effective_at"),
        Index("ix_ledger_entries_county_code_year", "county_code", "year"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # No column carries a foreign key: every entry is written from its line, in the
    # transaction that recognises it (INSERT … SELECT from order_lines, the households from
    # the line's share snapshot) or refunds it (rows built from the line it just read and
    # the refund it just wrote), and a key check (with its FOR KEY SHARE lock on the
    # referenced row) per entry halved the speed of recognising a backlog (migrations 0010
    # and 0023). `marketplace ledger-audit` checks each entry against its line instead.
    line_id: Mapped[uuid.UUID]
    order_id: Mapped[uuid.UUID]
    fulfilment_id: Mapped[uuid.UUID]
    product_id: Mapped[uuid.UUID]
    cooperative_id: Mapped[uuid.UUID]
    county_code: Mapped[str] = mapped_column(CHAR(12))
    buyer_id: Mapped[uuid.UUID]
    household_id: Mapped[uuid.UUID | None] = mapped_column(
        comment="NULL: the cooperative's part of the line."
    )
    kind: Mapped[EntryKind] = mapped_column(text_enum(EntryKind, "ledger_entry_kind"))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(CHAR(3))
    year: Mapped[int] = mapped_column(
        SmallInteger, comment="Assessment year: the calendar year of effective_at in China."
    )
    effective_at: Mapped[datetime] = mapped_column(
        comment="Delivery (cash: collection) for a recognition, the refund for an adjustment."
    )
    refund_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Recognition(Base):
    """A fulfilment whose lines entered the ledger: at most once, by primary key."""

    __tablename__ = "ledger_recognitions"

    # No foreign keys here nor on payouts (migration 0014): both are written by the
    # recognition statement from the fulfilment and order rows it has just read and
    # locked, and neither is ever deleted; the key checks, each locking the referenced
    # row, cost a fifth of the database's time in recognising a backlog.
    fulfilment_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(index=True)
    county_code: Mapped[str] = mapped_column(CHAR(12))
    recognised_at: Mapped[datetime] = mapped_column(comment="Delivery, or cash collection.")
    lines: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class FlagRule(enum.StrEnum):
    supplier_household = "supplier_household"  # the buyer is (or shares with) a supplier
    cooperative_insider = "cooperative_insider"  # a manager, member or contact of the seller
    dominant_buyer = "dominant_buyer"  # one buyer gives most of a household's year
    pre_assessment_spike = "pre_assessment_spike"  # a jump just before assessment


class FlagStatus(enum.StrEnum):
    open = "open"  # left out of assessment until an officer rules
    counted = "counted"
    excluded = "excluded"
    # An anomaly rule's flag whose condition no longer held before any officer ruled: its
    # income counts; the rule opens it again if the condition comes back.
    withdrawn = "withdrawn"


class AttributionFlag(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "attribution_flags"
    __table_args__ = (
        Index("ix_attribution_flags_county_code_status", "county_code", "status", "created_at"),
        # The anomaly rules find the flags already raised for the households of a batch.
        Index("ix_attribution_flags_household_id_year", "household_id", "year"),
    )

    county_code: Mapped[str] = mapped_column(CHAR(12))
    rule: Mapped[FlagRule] = mapped_column(text_enum(FlagRule, "flag_rule", length=30))
    status: Mapped[FlagStatus] = mapped_column(
        text_enum(FlagStatus, "flag_status"),
        default=FlagStatus.open,
        server_default=FlagStatus.open.value,
    )
    dedupe_key: Mapped[str] = mapped_column(
        String(200), unique=True, comment="One flag per rule and subject."
    )
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id"))
    buyer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    household_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("households.id"))
    cooperative_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("cooperatives.id"))
    year: Mapped[int | None] = mapped_column(SmallInteger)
    detail: Mapped[dict[str, Any]] = mapped_column(
        JSONB, comment="What fired the rule (which field matched, the figures)."
    )
    ruled_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    ruled_at: Mapped[datetime | None]
    ruling_reason: Mapped[str | None] = mapped_column(Text)


class FlagLine(Base):
    """Which household's part of which line a flag holds back from assessment."""

    __tablename__ = "attribution_flag_lines"
    __table_args__ = (
        Index("ix_attribution_flag_lines_line_id_household_id", "line_id", "household_id"),
    )

    flag_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("attribution_flags.id"), primary_key=True)
    line_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("order_lines.id"), primary_key=True)
    household_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("households.id"), primary_key=True)


class Ruling(Base):
    """Append-only: every ruling on a flag, in order; the flag shows the latest."""

    __tablename__ = "attribution_rulings"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    flag_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("attribution_flags.id"), index=True)
    ruling: Mapped[FlagStatus] = mapped_column(text_enum(FlagStatus, "flag_status"))
    reason: Mapped[str] = mapped_column(Text)
    officer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id"),
        comment="None: the flag's own rule withdrew it or opened it again.",
    )
    at: Mapped[datetime] = mapped_column(server_default=func.now())


class PayoutState(enum.StrEnum):
    held = "held"  # a dispute holds the order's settlement
    payable = "payable"  # no connected account: owed to the cooperative, paid by hand
    pending = "pending"  # a Stripe transfer is being made
    transferred = "transferred"
    failed = "failed"


class HouseholdYear(Base):
    """What the ledger holds for one household in one assessment year: the sum of its entries.

    Kept beside the ledger (`services.ledger.totals`) in the transaction that writes the
    entries, so that a rule about a household's year reads one row, not every entry.
    """

    __tablename__ = "ledger_household_years"

    household_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    year: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)


class BuyerYear(Base):
    """What one buyer's purchases brought one household in one year: the sum of those entries."""

    __tablename__ = "ledger_buyer_years"
    __table_args__ = (
        # The largest buyers of a household's year first: the dominant-buyer rule.
        Index(
            "ix_ledger_buyer_years_household_id_year_amount_fen",
            "household_id",
            "year",
            "amount_fen",
        ),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    year: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    buyer_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)


class Payout(UUIDPrimaryKey, Timestamps, Base):
    """What the platform owes a cooperative for one recognised fulfilment."""

    __tablename__ = "payouts"
    __table_args__ = (
        Index("ix_payouts_cooperative_id_created_at", "cooperative_id", "created_at"),
    )

    # Written with the recognition, from its rows: no foreign keys (see Recognition).
    fulfilment_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    order_id: Mapped[uuid.UUID]
    cooperative_id: Mapped[uuid.UUID]
    county_code: Mapped[str] = mapped_column(CHAR(12))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(CHAR(3))
    state: Mapped[PayoutState] = mapped_column(text_enum(PayoutState, "payout_state"))
    destination: Mapped[str | None] = mapped_column(
        String(255), comment="The Stripe connected account (acct_...), when there is one."
    )
    provider_transfer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    last_error: Mapped[str | None] = mapped_column(Text)
