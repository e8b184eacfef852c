"""Household file cards. Names and ID data are personal: see services.households.access."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime

from sqlalchemy import (
    ARRAY,
    CHAR,
    BigInteger,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.db import Base, Timestamps, UUIDPrimaryKey, text_enum


def text_enum_24(cls: type[enum.Enum], name: str) -> Enum:
    return text_enum(cls, name, 24)


class HouseholdStatus(enum.StrEnum):
    registered = "registered"
    exit_proposed = "exit_proposed"
    exited = "exited"
    monitored = "monitored"
    returned = "returned"
    deregistered = "deregistered"


class Cause(enum.StrEnum):
    illness = "illness"
    disability = "disability"
    education = "education"
    disaster = "disaster"
    land = "land"
    water = "water"
    technology = "technology"
    labour = "labour"
    funds = "funds"
    transport = "transport"
    motivation = "motivation"
    other = "other"


class HouseholdType(enum.StrEnum):
    ordinary = "ordinary"
    minimum_living = "minimum_living"
    five_guarantee = "five_guarantee"
    allowance_poor = "allowance_poor"


class Standard(enum.StrEnum):
    national = "national"
    provincial = "provincial"
    municipal = "municipal"


class Sex(enum.StrEnum):
    male = "male"
    female = "female"


class Relation(enum.StrEnum):
    head = "head"
    spouse = "spouse"
    child = "child"
    child_in_law = "child_in_law"
    grandchild = "grandchild"
    parent = "parent"
    grandparent = "grandparent"
    sibling = "sibling"
    other = "other"


class Education(enum.StrEnum):
    none = "none"
    preschool = "preschool"
    primary = "primary"
    junior_secondary = "junior_secondary"
    senior_secondary = "senior_secondary"
    vocational = "vocational"
    college = "college"


class Health(enum.StrEnum):
    healthy = "healthy"
    chronic_illness = "chronic_illness"
    serious_illness = "serious_illness"
    disabled = "disabled"


class Labour(enum.StrEnum):
    ordinary = "ordinary"
    skilled = "skilled"
    lost = "lost"
    none = "none"


class IncomeKind(enum.StrEnum):
    wage = "wage"
    operating = "operating"
    transfer = "transfer"
    property = "property"
    production_cost = "production_cost"


class Household(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "households"
    __table_args__ = (
        CheckConstraint("cardinality(other_causes) <= 2", name="at_most_two_other_causes"),
        Index("ix_households_county_code_village_code", "county_code", "village_code"),
    )

    county_code: Mapped[str] = mapped_column(CHAR(12))
    village_code: Mapped[str] = mapped_column(CHAR(12), ForeignKey("regions.code"))
    address: Mapped[str | None] = mapped_column(String(300), comment="Down to the village group.")
    phone: Mapped[str | None] = mapped_column(String(32))
    poor: Mapped[bool] = mapped_column(
        default=True,
        server_default="true",
        comment="Registered poor (建档立卡) or an ordinary member household.",
    )
    household_type: Mapped[HouseholdType] = mapped_column(
        text_enum_24(HouseholdType, "household_type")
    )
    standard: Mapped[Standard] = mapped_column(text_enum_24(Standard, "poverty_standard"))
    main_cause: Mapped[Cause] = mapped_column(text_enum_24(Cause, "poverty_cause"))
    other_causes: Mapped[list[str]] = mapped_column(
        ARRAY(String(24)), default=list, server_default="{}"
    )
    registration_year: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[HouseholdStatus] = mapped_column(
        text_enum_24(HouseholdStatus, "household_status"),
        default=HouseholdStatus.registered,
        server_default=HouseholdStatus.registered.value,
    )
    # "Two no-worries, three guarantees" and safe drinking water.
    food_clothing: Mapped[bool] = mapped_column(default=False, server_default="false")
    compulsory_education: Mapped[bool] = mapped_column(default=False, server_default="false")
    basic_medical: Mapped[bool] = mapped_column(default=False, server_default="false")
    safe_housing: Mapped[bool] = mapped_column(default=False, server_default="false")
    safe_drinking_water: Mapped[bool] = mapped_column(default=False, server_default="false")

    members: Mapped[list[Member]] = relationship(
        back_populates="household", order_by="Member.position", lazy="raise"
    )


class Member(UUIDPrimaryKey, Base):
    __tablename__ = "household_members"
    __table_args__ = (
        CheckConstraint("migrant_work_months BETWEEN 0 AND 12", name="migrant_months_range"),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("households.id"), index=True)
    position: Mapped[int] = mapped_column(SmallInteger)
    name: Mapped[str] = mapped_column(String(100))
    # Never the ID number itself: a keyed hash to find duplicates, and the tail to show.
    id_number_hash: Mapped[str | None] = mapped_column(CHAR(64), unique=True)
    id_number_last4: Mapped[str | None] = mapped_column(CHAR(4))
    birth_year: Mapped[int | None] = mapped_column(SmallInteger)
    sex: Mapped[Sex] = mapped_column(text_enum_24(Sex, "sex"))
    relation: Mapped[Relation] = mapped_column(text_enum_24(Relation, "member_relation"))
    ethnicity: Mapped[str | None] = mapped_column(String(40))
    education: Mapped[Education] = mapped_column(text_enum_24(Education, "education_level"))
    in_school: Mapped[bool] = mapped_column(default=False, server_default="false")
    health: Mapped[Health] = mapped_column(text_enum_24(Health, "health_status"))
    labour: Mapped[Labour] = mapped_column(text_enum_24(Labour, "labour_capacity"))
    migrant_work_months: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    medical_insurance: Mapped[bool] = mapped_column(default=False, server_default="false")
    pension_insurance: Mapped[bool] = mapped_column(default=False, server_default="false")
    allowance: Mapped[bool] = mapped_column(default=False, server_default="false")

    household: Mapped[Household] = relationship(back_populates="members", lazy="raise")


class StatusChange(Base):
    """Append-only history of a household's status: who moved it, when and why."""

    __tablename__ = "household_status_changes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    household_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("households.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(24))
    to_status: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str] = mapped_column(Text)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class OtherIncome(Base):
    """Income recorded by an officer outside the ledger, by year and kind, in fen."""

    __tablename__ = "household_incomes"
    __table_args__ = (
        CheckConstraint("amount_fen >= 0", name="amount_not_negative"),
        Index("ix_household_incomes_household_id_year", "household_id", "year"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    household_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("households.id"))
    county_code: Mapped[str] = mapped_column(CHAR(12))
    year: Mapped[int] = mapped_column(SmallInteger)
    kind: Mapped[IncomeKind] = mapped_column(text_enum_24(IncomeKind, "income_kind"))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(CHAR(3), default="CNY", server_default="CNY")
    note: Mapped[str | None] = mapped_column(Text)
    recorded_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    recorded_at: Mapped[datetime] = mapped_column(server_default=func.now())


class PairedCadre(Base):
    """帮扶责任人: a change of cadre adds a row; none is overwritten."""

    __tablename__ = "household_cadres"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    household_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("households.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    unit: Mapped[str | None] = mapped_column(String(200))
    level: Mapped[str | None] = mapped_column(String(40))
    phone: Mapped[str | None] = mapped_column(String(32))
    start_date: Mapped[date]
    recorded_at: Mapped[datetime] = mapped_column(server_default=func.now())
