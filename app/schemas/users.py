"""Accounts as the API reads and writes them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from app.schemas.common import RequestModel

Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]


def _phone_digits(phone: str) -> str:
    """Phones are kept as digits (with a leading + when given) so that they compare equal."""
    plus = "+" if phone.startswith("+") else ""
    return plus + "".join(ch for ch in phone if ch.isdigit())


Phone = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9][0-9 \-]{5,30}$"),
    AfterValidator(_phone_digits),
]
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
CountyCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}([0-9]{6})?$")]


class RegisterRequest(RequestModel):
    email: EmailStr
    password: Password
    display_name: DisplayName | None = None
    phone: Phone | None = None


class TokenRequest(RequestModel):
    email: Annotated[str, StringConstraints(min_length=1, max_length=320)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds until the token expires.")


class StaffCreate(RequestModel):
    email: EmailStr
    password: Password
    role: Literal["admin", "officer", "manager", "site_operator"]
    display_name: DisplayName | None = None
    phone: Phone | None = None
    county_code: CountyCode | None = Field(
        default=None,
        description="Officers: the county, as a 6-digit or 12-digit division code.",
    )
    cooperative_id: uuid.UUID | None = Field(
        default=None, description="Managers: their cooperative."
    )
    site_id: uuid.UUID | None = Field(default=None, description="Site operators: their site.")


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    role: Literal["buyer", "admin", "officer", "manager", "site_operator"]
    display_name: str | None
    phone: str | None
    county_code: str | None
    cooperative_id: uuid.UUID | None
    site_id: uuid.UUID | None
    created_at: datetime
