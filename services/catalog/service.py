"""Products: listing and editing by managers, certification, supply shares, the catalogue."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import Select, and_, func, literal_column, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.catalog.models import Product, ProductStatus, ShareEntry, ShareSet
from services.cooperatives.models import Cooperative, CooperativeStatus
from services.cooperatives.service import current_member_ids, get_cooperative
from services.db import driver_connection
from services.errors import Conflict, Invalid, NotFound
from services.pagination import Page, decode_cursor, keyset_page, page_of
from services.regions.codes import Level, code_range
from services.regions.service import require_region
from services.users import access
from services.users.models import Role, User

MAX_BASIS_POINTS = 10_000


def ensure_manages(actor: User, cooperative_id: uuid.UUID) -> None:
    access.ensure_role(actor, Role.admin, Role.manager)
    access.ensure_cooperative(actor, cooperative_id)


@dataclass(frozen=True, slots=True)
class NewProduct:
    title: str
    category: str
    unit: str
    price_fen: int
    description: str = ""
    stock: int = 0
    image_urls: list[str] = field(default_factory=list)
    origin_village_code: str | None = None
    status: ProductStatus = ProductStatus.draft


async def create_product(
    session: AsyncSession, actor: User, cooperative_id: uuid.UUID, data: NewProduct
) -> Product:
    cooperative = await get_cooperative(session, cooperative_id)
    ensure_manages(actor, cooperative.id)
    origin = data.origin_village_code or cooperative.village_code
    await require_region(session, origin, Level.village, field="origin_village_code")
    product = Product(
        id=uuid.uuid4(),
        cooperative_id=cooperative.id,
        county_code=cooperative.county_code,
        cooperative_active=cooperative.status is CooperativeStatus.active,
        title=data.title,
        description=data.description,
        category=data.category,
        unit=data.unit,
        price_fen=data.price_fen,
        stock=data.stock,
        image_urls=list(data.image_urls),
        origin_village_code=origin,
        status=data.status,
    )
    session.add(product)
    await session.flush()
    await session.refresh(product)
    return product


async def set_cooperative_listing(
    session: AsyncSession, cooperative_id: uuid.UUID, active: bool
) -> None:
    """Mirror a cooperative's status on its products, in the caller's transaction."""
    await session.execute(
        update(Product)
        .where(Product.cooperative_id == cooperative_id, Product.cooperative_active.is_not(active))
        .values(cooperative_active=active)
    )


async def _product(session: AsyncSession, product_id: uuid.UUID, *, lock: bool = False) -> Product:
    stmt = select(Product).where(Product.id == product_id)
    if lock:
        stmt = stmt.with_for_update()
    product = (await session.scalars(stmt)).one_or_none()
    if product is None:
        raise NotFound("No such product.")
    return product


EDITABLE = frozenset(
    {
        "title",
        "description",
        "category",
        "unit",
        "price_fen",
        "stock",
        "image_urls",
        "origin_village_code",
        "status",
    }
)


async def update_product(
    session: AsyncSession, actor: User, product_id: uuid.UUID, changes: dict[str, Any]
) -> Product:
    product = await _product(session, product_id, lock=True)
    ensure_manages(actor, product.cooperative_id)
    unknown = set(changes) - EDITABLE
    if unknown:
        raise Invalid("This field cannot be edited here.", field=sorted(unknown)[0])
    if changes.get("origin_village_code"):
        await require_region(
            session, changes["origin_village_code"], Level.village, field="origin_village_code"
        )
    for name, value in changes.items():
        if value is None and name not in ("description",):
            raise Invalid("This field cannot be cleared.", field=name)
        setattr(product, name, value if value is not None else "")
    product.updated_at = datetime.now(UTC)
    await session.flush()
    await session.refresh(product)
    return product


@dataclass(frozen=True, slots=True)
class Certificate:
    number: str
    issuer: str
    valid_until: date


async def certify(
    session: AsyncSession, actor: User, product_id: uuid.UUID, cert: Certificate | None
) -> Product:
    """Record (or, with None, revoke) a poverty-alleviation product certificate."""
    product = await _product(session, product_id, lock=True)
    access.ensure_role(actor, Role.admin, Role.officer)
    access.ensure_county(actor, product.county_code)
    now = datetime.now(UTC)
    product.certificate_number = cert.number if cert else None
    product.certificate_issuer = cert.issuer if cert else None
    product.certificate_valid_until = cert.valid_until if cert else None
    product.certified_by = actor.id if cert else None
    product.certified_at = now if cert else None
    product.updated_at = now
    await session.flush()
    await session.refresh(product)
    return product


def certificate_in_force(product: Product, today: date) -> bool:
    return _in_force(product.certificate_number, product.certificate_valid_until, today)


def _in_force(number: str | None, valid_until: date | None, today: date) -> bool:
    """A certificate shows its badge from its recording until its last valid day."""
    return bool(number) and valid_until is not None and valid_until >= today


@dataclass(frozen=True, slots=True)
class Share:
    household_id: uuid.UUID
    basis_points: int


@dataclass(frozen=True, slots=True)
class ShareSnapshot:
    set_id: uuid.UUID | None
    effective_from: datetime | None
    shares: list[Share]


async def set_shares(
    session: AsyncSession,
    actor: User,
    product_id: uuid.UUID,
    shares: list[Share],
    *,
    now: datetime,
) -> ShareSnapshot:
    """Replace a product's supply shares from now on; earlier sets stay for past sales."""
    product = await _product(session, product_id, lock=True)
    ensure_manages(actor, product.cooperative_id)
    seen: set[uuid.UUID] = set()
    for index, share in enumerate(shares):
        if share.household_id in seen:
            raise Invalid("A household appears twice.", field=f"{index}.household_id")
        seen.add(share.household_id)
        if not 1 <= share.basis_points <= MAX_BASIS_POINTS:
            raise Invalid(
                "A share is between 1 and 10000 basis points.", field=f"{index}.basis_points"
            )
    total = sum(share.basis_points for share in shares)
    if total > MAX_BASIS_POINTS:
        raise Invalid(
            f"Shares add up to {total} basis points; at most 10000.",
            field="basis_points",
            total=total,
        )
    members = await current_member_ids(session, product.cooperative_id, list(seen))
    for index, share in enumerate(shares):
        if share.household_id not in members:
            raise Invalid(
                "This household is not a member of the product's cooperative.",
                field=f"{index}.household_id",
            )
    share_set = ShareSet(
        id=uuid.uuid4(),
        product_id=product.id,
        county_code=product.county_code,
        effective_from=now,
        created_by=actor.id,
    )
    session.add(share_set)
    await session.flush()
    session.add_all(
        ShareEntry(set_id=share_set.id, household_id=s.household_id, basis_points=s.basis_points)
        for s in shares
    )
    await session.flush()
    return ShareSnapshot(share_set.id, now, list(shares))


async def shares_at(session: AsyncSession, product_id: uuid.UUID, at: datetime) -> ShareSnapshot:
    """The shares in force at a moment: the latest set that took effect by then."""
    share_set = (
        await session.scalars(
            select(ShareSet)
            .where(ShareSet.product_id == product_id, ShareSet.effective_from <= at)
            .order_by(ShareSet.effective_from.desc(), ShareSet.id.desc())
            .limit(1)
        )
    ).one_or_none()
    if share_set is None:
        return ShareSnapshot(None, None, [])
    entries = (
        await session.scalars(
            select(ShareEntry)
            .where(ShareEntry.set_id == share_set.id)
            .order_by(ShareEntry.household_id)
        )
    ).all()
    return ShareSnapshot(
        share_set.id,
        share_set.effective_from,
        [Share(e.household_id, e.basis_points) for e in entries],
    )


async def get_shares(
    session: AsyncSession, actor: User, product_id: uuid.UUID, *, now: datetime
) -> ShareSnapshot:
    product = await _product(session, product_id)
    if actor.role is Role.officer:
        access.ensure_county(actor, product.county_code)
    else:
        ensure_manages(actor, product.cooperative_id)
    return await shares_at(session, product.id, now)


async def cooperative_products(
    session: AsyncSession,
    actor: User,
    cooperative_id: uuid.UUID,
    *,
    status: ProductStatus | None,
    limit: int,
    cursor: str | None,
) -> Page[Listing]:
    """A cooperative's own products in every status, newest first, for its managers."""
    cooperative = await get_cooperative(session, cooperative_id)
    ensure_manages(actor, cooperative.id)
    stmt = select(Product).where(Product.cooperative_id == cooperative.id)
    if status is not None:
        stmt = stmt.where(Product.status == status)
    page = await keyset_page(
        session,
        stmt,
        order=[Product.created_at, Product.id],
        kind="cooperative-products",
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    items = [Listing(p, cooperative.name, cooperative.kind.value) for p in page.items]
    return Page(items, page.next_cursor)


# --- stock for orders ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reserved:
    """What a reservation saw of a product, under its row lock: the price a line keeps,
    and the supply shares in force."""

    product_id: uuid.UUID
    cooperative_id: uuid.UUID
    county_code: str
    title: str
    unit: str
    price_fen: int
    currency: str
    certified: bool
    shares: ShareSnapshot


async def reserve(
    session: AsyncSession,
    wanted: list[tuple[uuid.UUID, int]],
    *,
    today: date,
    shares_at: datetime,
) -> dict[uuid.UUID, Reserved]:
    """Move stock to reserved for each (product, quantity), all or nothing, and read
    each product's share set in force at `shares_at` with its entries.

    One statement for the whole cart: the products are locked in id order (so that
    two carts holding the same products cannot deadlock), then each is taken by a
    conditional UPDATE that guards the rule "stock never below zero" whatever the
    concurrency. `wanted` names each product once. A product not taken (short, or
    not for sale) raises, and the caller's transaction rolls back the others.
    """
    driver = await driver_connection(session)
    ids = [product_id for product_id, _ in wanted]
    rows = await driver.fetch(_RESERVE, ids, [quantity for _, quantity in wanted], shares_at)
    by_product: dict[uuid.UUID, list[Any]] = {}
    for row in rows:
        by_product.setdefault(row["id"], []).append(row)
    taken: dict[uuid.UUID, Reserved] = {}
    for index, (product_id, quantity) in enumerate(wanted):
        found = by_product.get(product_id)
        if found is None:
            await _explain_shortfall(session, product_id, quantity, index)
        row = found[0]
        certified = _in_force(row["certificate_number"], row["certificate_valid_until"], today)
        taken[product_id] = Reserved(
            product_id,
            row["cooperative_id"],
            row["county_code"],
            row["title"],
            row["unit"],
            row["price_fen"],
            row["currency"],
            certified,
            ShareSnapshot(
                row["set_id"],
                row["effective_from"],
                [
                    Share(r["household_id"], r["basis_points"])
                    for r in found
                    if r["household_id"] is not None
                ],
            ),
        )
    return taken


# Checkout's hot statements, as fixed SQL on the driver: the text never changes, so
# asyncpg prepares each once per connection, and no statement is built per call (the
# ORM's construction and compilation cost more than PostgreSQL's work here).
_RESERVE = """
WITH locked AS MATERIALIZED (
    SELECT p.id FROM products p WHERE p.id = ANY($1::uuid[]) ORDER BY p.id FOR NO KEY UPDATE
), taken AS (
    UPDATE products p
       SET stock = p.stock - w.quantity, reserved = p.reserved + w.quantity, updated_at = now()
      FROM locked, unnest($1::uuid[], $2::integer[]) AS w(id, quantity)
     WHERE p.id = locked.id AND w.id = locked.id
       AND p.status = 'active' AND p.cooperative_active AND p.stock >= w.quantity
    RETURNING p.id, p.cooperative_id, p.county_code, p.title, p.unit, p.price_fen,
              p.currency, p.certificate_number, p.certificate_valid_until
)
SELECT t.*, s.id AS set_id, s.effective_from, e.household_id, e.basis_points
  FROM taken t
  LEFT JOIN LATERAL (
      SELECT ss.id, ss.effective_from
        FROM supply_share_sets ss
       WHERE ss.product_id = t.id AND ss.effective_from <= $3
       ORDER BY ss.effective_from DESC, ss.id DESC
       LIMIT 1
  ) s ON true
  LEFT JOIN supply_share_entries e ON e.set_id = s.id
 ORDER BY t.id, e.household_id
"""


async def _explain_shortfall(
    session: AsyncSession, product_id: uuid.UUID, quantity: int, index: int
) -> NoReturn:
    product = await session.get(Product, product_id)
    if (
        product is None
        or product.status is not ProductStatus.active
        or not product.cooperative_active
    ):
        raise Invalid("This product is not for sale.", field=f"lines.{index}.product_id")
    raise Conflict(
        f"Only {product.stock} left in stock.",
        field=f"lines.{index}.quantity",
        reason="out-of-stock",
        available=product.stock,
        requested=quantity,
    )


async def release(session: AsyncSession, items: list[tuple[uuid.UUID, int]]) -> None:
    """Return reserved units to stock (an order cancelled, expired or refused)."""
    for product_id, quantity in sorted(items, key=lambda x: str(x[0])):
        await session.execute(
            update(Product)
            .where(Product.id == product_id)
            .values(stock=Product.stock + quantity, reserved=Product.reserved - quantity)
        )


async def unsell(session: AsyncSession, items: list[tuple[uuid.UUID, int]]) -> None:
    """Sold units come back (a paid order cancelled before shipment)."""
    for product_id, quantity in sorted(items, key=lambda x: str(x[0])):
        await session.execute(
            update(Product)
            .where(Product.id == product_id)
            .values(stock=Product.stock + quantity, sold_count=Product.sold_count - quantity)
        )


# --- the public catalogue -------------------------------------------------


class Sort(enum.StrEnum):
    newest = "newest"
    price_asc = "price_asc"
    price_desc = "price_desc"
    best_selling = "best_selling"


@dataclass(frozen=True, slots=True)
class CatalogueQuery:
    q: str | None = None
    category: str | None = None
    region: str | None = None
    certified: bool | None = None
    min_price: int | None = None
    max_price: int | None = None
    in_stock: bool | None = None
    sort: Sort = Sort.newest
    limit: int = 20
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Listing:
    product: Product
    cooperative_name: str
    cooperative_kind: str


def _listed() -> Select[*tuple[Any, ...]]:
    return (
        select(Product, Cooperative.name, Cooperative.kind)
        .join(Cooperative, Cooperative.id == Product.cooperative_id)
        # Written as literal SQL (not bound parameters) so that even a generic plan of
        # the prepared statement can use the partial indexes defined on it.
        .where(Product.status == literal_column("'active'"), Product.cooperative_active)
    )


def search_terms(q: str) -> list[str]:
    return [term for term in q.split() if term][:8]


_SORT_KEYS = {
    Sort.newest: (Product.created_at, True),
    Sort.price_asc: (Product.price_fen, False),
    Sort.price_desc: (Product.price_fen, True),
    # Refreshed by services.catalog.ranking, not by each sale (see there).
    Sort.best_selling: (Product.ranked_sold_count, True),
}


def catalogue_statement(query: CatalogueQuery, *, today: date) -> Select[*tuple[Any, ...]]:
    """The catalogue query without its LIMIT (the benchmark EXPLAINs this very statement)."""
    stmt = _listed()
    if query.q:
        haystack = func.lower(Product.title + " " + Product.description)
        for term in search_terms(query.q):
            # The GIN index narrows by grams; strpos confirms the exact substring. A
            # term of one or two characters is itself a gram, so the index is exact.
            stmt = stmt.where(Product.search_terms.op("@>")(func.search_query_grams(term)))
            if len(term) > 2:
                stmt = stmt.where(func.strpos(haystack, func.lower(term)) > 0)
    if query.category:
        stmt = stmt.where(Product.category == query.category)
    if query.region:
        low, high = code_range(query.region)
        stmt = stmt.where(Product.origin_village_code.between(low, high))
    if query.certified is not None:
        in_force = and_(
            Product.certificate_number.is_not(None), Product.certificate_valid_until >= today
        )
        stmt = stmt.where(
            in_force
            if query.certified
            else or_(
                Product.certificate_number.is_(None),
                Product.certificate_valid_until.is_(None),
                Product.certificate_valid_until < today,
            )
        )
    if query.min_price is not None:
        stmt = stmt.where(Product.price_fen >= query.min_price)
    if query.max_price is not None:
        stmt = stmt.where(Product.price_fen <= query.max_price)
    if query.in_stock is not None:
        stmt = stmt.where(Product.stock > 0 if query.in_stock else Product.stock == 0)

    key, descending = _SORT_KEYS[query.sort]
    if query.cursor:
        convert = datetime.fromisoformat if query.sort is Sort.newest else int
        value, after = decode_cursor(
            query.cursor, f"products:{query.sort.value}", convert, uuid.UUID
        )
        here = tuple_(key, Product.id)
        stmt = stmt.where(
            here < tuple_(value, after) if descending else here > tuple_(value, after)
        )
    # With a search, order by an expression no index provides: otherwise the planner
    # may walk the sort index and filter row by row, hoping for early matches, which
    # reads the whole table for a rare word. This way the GIN index finds the matches
    # and only those are sorted, whatever the word.
    order_key: Any = key
    if query.q:
        order_key = key + timedelta(0) if key is Product.created_at else key + 0
    if descending:
        return stmt.order_by(order_key.desc(), Product.id.desc())
    return stmt.order_by(order_key.asc(), Product.id.asc())


async def catalogue(session: AsyncSession, query: CatalogueQuery, *, today: date) -> Page[Listing]:
    stmt = catalogue_statement(query, today=today)
    key, _ = _SORT_KEYS[query.sort]
    kind = f"products:{query.sort.value}"

    def position(row: Any) -> list[Any]:
        value = getattr(row[0], key.key)
        return [value.isoformat() if isinstance(value, datetime) else value, str(row[0].id)]

    page = await page_of(session, stmt, limit=query.limit, kind=kind, key=position, scalars=False)
    items = [Listing(row[0], row[1], str(row[2])) for row in page.items]
    return Page(items, page.next_cursor)


async def get_listing(
    session: AsyncSession, product_id: uuid.UUID, actor: User | None = None
) -> Listing:
    """A product as the public sees it; its own managers also see drafts and archived ones."""
    row = (
        await session.execute(
            select(Product, Cooperative.name, Cooperative.kind, Cooperative.status)
            .join(Cooperative, Cooperative.id == Product.cooperative_id)
            .where(Product.id == product_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound("No such product.")
    product, name, kind, coop_status = row
    public = product.status is ProductStatus.active and coop_status is CooperativeStatus.active
    insider = actor is not None and (
        access.manages(actor, product.cooperative_id)
        or access.acts_in_county(actor, product.county_code)
    )
    if not (public or insider):
        raise NotFound("No such product.")
    return Listing(product, name, str(kind))
