"""Products and the households that supply them."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime

from sqlalchemy import (
    ARRAY,
    CHAR,
    BigInteger,
    CheckConstraint,
    Computed,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, Timestamps, UUIDPrimaryKey

# search_grams() is created by the migration that creates the products table: it
# lower-cases a text and returns its distinct 1- and 2-character grams, without
# whitespace. Bigrams index Chinese (where a two-character word is common and
# pg_trgm needs three) as well as any other script, whatever the database locale.
SEARCH_GRAMS_EXPRESSION = "search_grams(title || ' ' || description)"


# What the public catalogue shows; every listing index is partial on it.
LISTED = text("status = 'active' AND cooperative_active")


class ProductStatus(enum.StrEnum):
    draft = "draft"
    active = "active"
    archived = "archived"


class Product(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("reserved >= 0", name="reserved_not_negative"),
        CheckConstraint("price_fen > 0", name="price_positive"),
        Index("ix_products_search_terms", "search_terms", postgresql_using="gin"),
        Index("ix_products_cooperative_id", "cooperative_id"),
        Index(
            "ix_products_active_newest",
            text("created_at DESC"),
            text("id DESC"),
            postgresql_where=LISTED,
        ),
        Index(
            "ix_products_active_price",
            "price_fen",
            "id",
            postgresql_where=LISTED,
        ),
        Index(
            "ix_products_active_best_selling",
            text("ranked_sold_count DESC"),
            text("id DESC"),
            postgresql_where=LISTED,
        ),
        Index(
            "ix_products_active_origin",
            "origin_village_code",
            postgresql_where=LISTED,
        ),
        # Room on each page for the new version of a row that a sale or a
        # reservation updates, so that the update is HOT (no index entries).
        {"postgresql_with": {"fillfactor": 80}},
    )

    cooperative_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cooperatives.id"))
    county_code: Mapped[str] = mapped_column(CHAR(12))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    category: Mapped[str] = mapped_column(String(40))
    unit: Mapped[str] = mapped_column(String(20))
    price_fen: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(CHAR(3), default="CNY", server_default="CNY")
    stock: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reserved: Mapped[int] = mapped_column(
        Integer,
        default=0,
        server_default="0",
        comment="Held by orders not yet paid or collected; returns to stock if they fail.",
    )
    # Changed by every sale, so no index may cover it: the sale's update stays HOT.
    sold_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    ranked_sold_count: Mapped[int] = mapped_column(
        BigInteger,
        default=0,
        server_default="0",
        comment="sold_count as of the last ranking pass; the best-selling sort reads it.",
    )
    image_urls: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default="{}")
    origin_village_code: Mapped[str] = mapped_column(CHAR(12), ForeignKey("regions.code"))
    status: Mapped[ProductStatus] = mapped_column(
        Enum(
            ProductStatus,
            name="product_status",
            native_enum=False,
            create_constraint=True,
            length=10,
        ),
        default=ProductStatus.draft,
        server_default=ProductStatus.draft.value,
    )
    cooperative_active: Mapped[bool] = mapped_column(
        default=True,
        server_default="true",
        comment="Copy of the cooperative's status, so that listing needs no join to filter.",
    )
    certificate_number: Mapped[str | None] = mapped_column(String(64))
    certificate_issuer: Mapped[str | None] = mapped_column(String(200))
    certificate_valid_until: Mapped[date | None]
    certified_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    certified_at: Mapped[datetime | None]
    # Deferred: about a kilobyte per row that only the search condition reads.
    search_terms: Mapped[list[str]] = mapped_column(
        ARRAY(Text), Computed(SEARCH_GRAMS_EXPRESSION, persisted=True), deferred=True
    )


class ShareSet(UUIDPrimaryKey, Base):
    """The supply shares of a product from one moment on; a change adds a new set."""

    __tablename__ = "supply_share_sets"
    __table_args__ = (
        Index("ix_supply_share_sets_product_effective", "product_id", text("effective_from DESC")),
    )

    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id"))
    county_code: Mapped[str] = mapped_column(CHAR(12))
    effective_from: Mapped[datetime] = mapped_column(server_default=func.now())
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))


class ShareEntry(Base):
    __tablename__ = "supply_share_entries"
    __table_args__ = (
        CheckConstraint("basis_points BETWEEN 1 AND 10000", name="basis_points_range"),
    )

    set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("supply_share_sets.id"), primary_key=True)
    household_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("households.id"), primary_key=True)
    basis_points: Mapped[int] = mapped_column(Integer)
