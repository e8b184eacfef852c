"""Operations on accounts: sign-up, staff creation, login with throttle, lookup."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import make_transient_to_detached

from services.db import autocommit_driver, built
from services.errors import Conflict, Invalid, NotFound, TooManyAttempts, Unauthenticated
from services.users.models import STAFF_ROLES, LoginFailure, Role, User
from services.users.passwords import hash_password, verify_password


def normalise_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class NewAccount:
    email: str
    password: str
    display_name: str | None = None
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class NewStaff:
    email: str
    password: str
    role: Role
    display_name: str | None = None
    phone: str | None = None
    county_code: str | None = None
    cooperative_id: uuid.UUID | None = None
    site_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    max_failures: int
    window: timedelta


async def register_buyer(session: AsyncSession, account: NewAccount) -> User:
    return await _insert_user(
        session,
        account.email,
        account.password,
        Role.buyer,
        display_name=account.display_name,
        phone=account.phone,
    )


async def create_staff(session: AsyncSession, staff: NewStaff) -> User:
    if staff.role not in STAFF_ROLES:
        raise Invalid("Staff users are admins, officers, managers or site operators.", field="role")
    _check_scope_fields(staff)
    await _check_scope_exists(session, staff)
    return await _insert_user(
        session,
        staff.email,
        staff.password,
        staff.role,
        display_name=staff.display_name,
        phone=staff.phone,
        county_code=staff.county_code if staff.role is Role.officer else None,
        cooperative_id=staff.cooperative_id if staff.role is Role.manager else None,
        site_id=staff.site_id if staff.role is Role.site_operator else None,
    )


def _check_scope_fields(staff: NewStaff) -> None:
    required = {
        Role.officer: ("county_code", staff.county_code),
        Role.manager: ("cooperative_id", staff.cooperative_id),
        Role.site_operator: ("site_id", staff.site_id),
    }
    if staff.role in required:
        name, value = required[staff.role]
        if value is None:
            raise Invalid(f"A {staff.role.value} needs {name}.", field=name)
    for role, (name, value) in required.items():
        if role is not staff.role and value is not None:
            raise Invalid(f"{name} applies only to the {role.value} role.", field=name)


async def _check_scope_exists(session: AsyncSession, staff: NewStaff) -> None:
    # Imported here: those areas build on accounts, not the other way round.
    from services.cooperatives.service import get_cooperative
    from services.regions.codes import Level
    from services.regions.service import get_site, require_region

    try:
        if staff.role is Role.officer and staff.county_code:
            await require_region(session, staff.county_code, Level.county, field="county_code")
        if staff.role is Role.manager and staff.cooperative_id:
            await get_cooperative(session, staff.cooperative_id)
        if staff.role is Role.site_operator and staff.site_id:
            await get_site(session, staff.site_id)
    except NotFound as exc:
        field = "cooperative_id" if staff.role is Role.manager else "site_id"
        raise Invalid(exc.detail, field=field) from exc


async def _insert_user(
    session: AsyncSession, email: str, password: str, role: Role, **fields: object
) -> User:
    email = normalise_email(email)
    password_hash = await hash_password(password)
    # ON CONFLICT keeps two simultaneous sign-ups with one email from racing past
    # a SELECT-then-INSERT check; the loser gets a clean 409.
    stmt = (
        insert(User)
        .values(id=uuid.uuid4(), email=email, password_hash=password_hash, role=role, **fields)
        .on_conflict_do_nothing(index_elements=[User.email])
        .returning(User)
    )
    user = (await session.scalars(stmt)).one_or_none()
    if user is None:
        raise Conflict("An account with this email already exists.", field="email")
    return user


async def get_active_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    user = await session.get(User, user_id)
    if user is None or not user.is_active:
        return None
    return user


async def read_active_user(
    factory: async_sessionmaker[AsyncSession], user_id: uuid.UUID
) -> User | None:
    """An active user read outside any transaction, detached, as if loaded and expunged.

    For routes that authenticate before opening their own transactions: one
    statement that commits by itself, where a session would add BEGIN and ROLLBACK
    round trips. Every column is loaded, so the detached user never needs a session.
    """
    async with autocommit_driver(factory) as driver:
        row = await driver.fetchrow(_ACTIVE_USER, user_id)
    if row is None:
        return None
    user = built(User, role=Role(row["role"]), **{key: row[key] for key in _PLAIN_USER_COLUMNS})
    make_transient_to_detached(user)
    return user


_PLAIN_USER_COLUMNS = tuple(c.name for c in User.__table__.columns if c.name != "role")
_ACTIVE_USER = (
    f"SELECT role, {', '.join(_PLAIN_USER_COLUMNS)} FROM users WHERE id = $1 AND is_active"  # noqa: S608 (names from our own metadata)
)


async def authenticate(
    session: AsyncSession, email: str, password: str, *, policy: LoginPolicy, now: datetime
) -> User:
    """Check a password, counting failures per account within a sliding window.

    The advisory lock serialises attempts on one email, so that concurrent guesses
    cannot all slip in under the limit.
    """
    email = normalise_email(email)
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"login:{email}"},
    )
    since = now - policy.window
    await session.execute(
        delete(LoginFailure).where(LoginFailure.email == email, LoginFailure.failed_at < since)
    )
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(LoginFailure.failed_at)).where(
                LoginFailure.email == email, LoginFailure.failed_at >= since
            )
        )
    ).one()
    if count >= policy.max_failures:
        retry_after = max(1, int((oldest + policy.window - now).total_seconds()) + 1)
        raise TooManyAttempts(
            "Too many failed logins for this account; try again later.", retry_after=retry_after
        )

    user = (await session.scalars(select(User).where(User.email == email))).one_or_none()
    valid = await verify_password(user.password_hash if user else None, password)
    if user is None or not valid or not user.is_active:
        session.add(LoginFailure(email=email, failed_at=now))
        await session.flush()
        raise LoginFailed("The email or password is not correct.")

    await session.execute(delete(LoginFailure).where(LoginFailure.email == email))
    return user


class LoginFailed(Unauthenticated):
    """A wrong password: the failure row must be kept though the request fails."""

    keep_changes = True
