"""Products as managers write them and storefronts read them."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, Field, StringConstraints

from app.schemas.common import RequestModel
from app.schemas.regions import RegionCode

Category = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{1,39}$")]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Unit = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]
Description = Annotated[str, StringConstraints(max_length=10_000)]
PriceFen = Annotated[int, Field(gt=0, le=10**10, description="Integer fen (CNY minor units).")]
Stock = Annotated[int, Field(ge=0, le=2_000_000_000)]
StatusName = Literal["draft", "active", "archived"]


class ProductCreate(RequestModel):
    title: Title
    description: Description = ""
    category: Category
    unit: Unit
    price_fen: PriceFen
    stock: Stock = 0
    image_urls: list[AnyHttpUrl] = Field(default_factory=list, max_length=20)
    origin_village_code: RegionCode | None = Field(
        default=None, description="Defaults to the cooperative's village."
    )
    status: StatusName = "draft"


class ProductPatch(RequestModel):
    title: Title | None = None
    description: Description | None = None
    category: Category | None = None
    unit: Unit | None = None
    price_fen: PriceFen | None = None
    stock: Stock | None = None
    image_urls: list[AnyHttpUrl] | None = Field(default=None, max_length=20)
    origin_village_code: RegionCode | None = None
    status: StatusName | None = None


class CertificateIn(RequestModel):
    number: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    issuer: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    valid_until: date


class CertificateOut(BaseModel):
    number: str
    issuer: str
    valid_until: date


class CooperativeRef(BaseModel):
    id: uuid.UUID
    name: str
    kind: str


class ProductOut(BaseModel):
    """A product as anyone may see it: no household data."""

    id: uuid.UUID
    cooperative: CooperativeRef
    title: str
    description: str
    category: str
    unit: str
    price_fen: int
    currency: str
    stock: int
    in_stock: bool
    sold_count: int
    image_urls: list[str]
    origin_village_code: str
    status: StatusName
    certified: bool = Field(description="A poverty-alleviation certificate is in force today.")
    certificate: CertificateOut | None = Field(description="Shown only while in force.")
    created_at: datetime
    updated_at: datetime


class ShareIn(RequestModel):
    household_id: uuid.UUID
    basis_points: int = Field(ge=1, le=10_000)


class ShareOut(BaseModel):
    household_id: uuid.UUID
    basis_points: int


class SharesOut(BaseModel):
    product_id: uuid.UUID
    effective_from: datetime | None
    total_basis_points: int
    cooperative_basis_points: int = Field(description="What stays with the cooperative.")
    shares: list[ShareOut]
