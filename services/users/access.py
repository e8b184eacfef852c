"""Who may act where: the scope checks every area reuses.

An officer acts within one county, a manager within one cooperative, a site
operator at one service site; an admin everywhere. A check that fails raises
Forbidden, so that each area states its rule in one line.
"""

from __future__ import annotations

import uuid

from services.errors import Forbidden
from services.regions.codes import county_of
from services.users.models import Role, User


def acts_in_county(user: User, region_code: str) -> bool:
    """Admins act anywhere; officers only within their own county."""
    return user.role is Role.admin or (
        user.role is Role.officer and user.county_code == county_of(region_code)
    )


def manages(user: User, cooperative_id: uuid.UUID) -> bool:
    """Admins act on any cooperative; managers only on their own."""
    return user.role is Role.admin or (
        user.role is Role.manager and user.cooperative_id == cooperative_id
    )


def ensure_role(user: User, *roles: Role) -> None:
    if user.role not in roles:
        allowed = ", ".join(sorted(r.value for r in roles))
        raise Forbidden(f"This action needs one of the roles: {allowed}.")


def ensure_county(user: User, region_code: str) -> None:
    if not acts_in_county(user, region_code):
        raise Forbidden("This record lies outside your county.")


def ensure_cooperative(user: User, cooperative_id: uuid.UUID) -> None:
    if not manages(user, cooperative_id):
        raise Forbidden("This cooperative is not yours to manage.")


def ensure_site(user: User, site_id: uuid.UUID) -> None:
    if user.role is Role.admin:
        return
    if user.role is Role.site_operator and user.site_id == site_id:
        return
    raise Forbidden("This service site is not yours to operate.")
