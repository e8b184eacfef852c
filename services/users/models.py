"""Accounts of buyers and staff, and the failed-login record behind the throttle."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import CHAR, BigInteger, CheckConstraint, Enum, ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, Timestamps, UUIDPrimaryKey


class Role(enum.StrEnum):
    buyer = "buyer"
    admin = "admin"
    officer = "officer"
    manager = "manager"
    site_operator = "site_operator"


STAFF_ROLES = frozenset({Role.admin, Role.officer, Role.manager, Role.site_operator})


class User(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "users"
    __table_args__ = (
        # Each staff role carries exactly the scope it acts within.
        CheckConstraint(
            "(role = 'officer') = (county_code IS NOT NULL)", name="officer_has_county"
        ),
        CheckConstraint(
            "(role = 'manager') = (cooperative_id IS NOT NULL)", name="manager_has_cooperative"
        ),
        CheckConstraint(
            "(role = 'site_operator') = (site_id IS NOT NULL)", name="site_operator_has_site"
        ),
    )

    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(
        Enum(Role, name="user_role", native_enum=False, create_constraint=True, length=20)
    )
    display_name: Mapped[str | None] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(32))
    county_code: Mapped[str | None] = mapped_column(CHAR(12), ForeignKey("regions.code"))
    cooperative_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("cooperatives.id"))
    site_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("service_sites.id"))
    is_active: Mapped[bool] = mapped_column(default=True, server_default="true")


class LoginFailure(Base):
    """One failed password check; rows older than the window are pruned as we go."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_email_failed_at", "email", "failed_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320))
    failed_at: Mapped[datetime] = mapped_column(server_default=func.now())
