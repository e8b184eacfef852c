"""Thresholds by year (with their edit history) and the exit workflow's proposals."""

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
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, Timestamps, UUIDPrimaryKey, text_enum


class Threshold(Base):
    """The figures assessment uses for one year; admins edit them, every edit is kept."""

    __tablename__ = "assessment_thresholds"
    __table_args__ = (
        CheckConstraint("poverty_line_yuan > 0", name="poverty_line_positive"),
        CheckConstraint(
            "monitoring_line_yuan >= poverty_line_yuan", name="monitoring_line_not_below_line"
        ),
        CheckConstraint("income_drop_bp BETWEEN 1 AND 10000", name="income_drop_bp_range"),
        CheckConstraint("exit_incidence_bp BETWEEN 0 AND 10000", name="exit_incidence_range"),
        CheckConstraint(
            "western_exit_incidence_bp BETWEEN 0 AND 10000", name="western_incidence_range"
        ),
        CheckConstraint("taobao_sales_yuan >= 0", name="taobao_sales_not_negative"),
        CheckConstraint("taobao_active_stores >= 0", name="taobao_stores_not_negative"),
        CheckConstraint(
            "taobao_store_share_bp BETWEEN 0 AND 10000", name="taobao_store_share_range"
        ),
    )

    year: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    poverty_line_yuan: Mapped[int] = mapped_column(
        Integer, comment="Per person per year, current prices."
    )
    monitoring_line_yuan: Mapped[int] = mapped_column(
        Integer, comment="Per person per year: under it, an exited household is watched."
    )
    income_drop_bp: Mapped[int] = mapped_column(
        Integer,
        server_default="3000",
        comment="A fall in per-capita income from the year before beyond this share flags it.",
    )
    exit_incidence_bp: Mapped[int] = mapped_column(
        Integer, server_default="200", comment="County and village exit: incidence below this."
    )
    western_exit_incidence_bp: Mapped[int] = mapped_column(
        Integer, server_default="300", comment="The same, in the western region."
    )
    taobao_sales_yuan: Mapped[int] = mapped_column(
        BigInteger, server_default="10000000", comment="Taobao village: yearly sales at least."
    )
    taobao_active_stores: Mapped[int] = mapped_column(
        Integer, server_default="100", comment="... and at least this many active stores,"
    )
    taobao_store_share_bp: Mapped[int] = mapped_column(
        Integer, server_default="1000", comment="... or active stores in this share of households."
    )
    source: Mapped[str | None] = mapped_column(Text, comment="Where the figures come from.")
    updated_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ThresholdEdit(Base):
    """Append-only: each write of a year's thresholds, with the figures before and after."""

    __tablename__ = "assessment_threshold_edits"
    __table_args__ = (Index("ix_assessment_threshold_edits_year", "year", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    year: Mapped[int] = mapped_column(SmallInteger)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any]] = mapped_column(JSONB)
    edited_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    edited_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ProposalStatus(enum.StrEnum):
    open = "open"  # in public notice, then waiting for a decision
    approved = "approved"
    rejected = "rejected"


class ExitProposal(UUIDPrimaryKey, Timestamps, Base):
    """An officer's proposal that a household exits, its public notice and the decision."""

    __tablename__ = "exit_proposals"
    __table_args__ = (
        # At most one undecided proposal per household.
        Index(
            "uq_exit_proposals_household_id_open",
            "household_id",
            unique=True,
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_exit_proposals_county_code_status", "county_code", "status"),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("households.id"))
    county_code: Mapped[str] = mapped_column(CHAR(12))
    year: Mapped[int] = mapped_column(SmallInteger, comment="The assessment year it rests on.")
    status: Mapped[ProposalStatus] = mapped_column(
        text_enum(ProposalStatus, "exit_proposal_status"),
        default=ProposalStatus.open,
        server_default=ProposalStatus.open.value,
    )
    reason: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(
        JSONB, comment="The household-year row the proposal was made on."
    )
    from_status: Mapped[str] = mapped_column(String(24))
    proposed_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    notice_starts_at: Mapped[datetime]
    notice_ends_at: Mapped[datetime]
    decided_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None]
    decision_reason: Mapped[str | None] = mapped_column(Text)


class ExitObjection(Base):
    """An objection raised during the public notice of a proposal (append-only)."""

    __tablename__ = "exit_objections"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    proposal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("exit_proposals.id"), index=True)
    county_code: Mapped[str] = mapped_column(CHAR(12))
    objector: Mapped[str | None] = mapped_column(
        String(200), comment="Who objected, as they chose to be named (may be anonymous)."
    )
    text: Mapped[str] = mapped_column(Text)
    recorded_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    recorded_at: Mapped[datetime] = mapped_column(server_default=func.now())
