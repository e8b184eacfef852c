"""Products: managers list and edit them, officers certify them, storefronts browse them."""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status

from app.deps import CurrentUser, Cursor, MaybeUser, SessionDep, now, require, today
from app.schemas.catalog import (
    Category,
    CertificateIn,
    CertificateOut,
    CooperativeRef,
    ProductCreate,
    ProductOut,
    ProductPatch,
    ShareIn,
    ShareOut,
    SharesOut,
    StatusName,
)
from app.schemas.common import PageOut
from app.schemas.problem import problem_responses
from app.schemas.regions import RegionCode
from services.catalog import service as catalog
from services.catalog.models import Product, ProductStatus
from services.users.models import Role, User

router = APIRouter(prefix="/v1", tags=["products"])
Manager = Annotated[User, Depends(require(Role.admin, Role.manager))]
Certifier = Annotated[User, Depends(require(Role.admin, Role.officer))]
ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422)


def product_out(listing: catalog.Listing) -> ProductOut:
    p = listing.product
    in_force = catalog.certificate_in_force(p, today())
    return ProductOut(
        id=p.id,
        cooperative=CooperativeRef(
            id=p.cooperative_id, name=listing.cooperative_name, kind=listing.cooperative_kind
        ),
        title=p.title,
        description=p.description,
        category=p.category,
        unit=p.unit,
        price_fen=p.price_fen,
        currency=p.currency,
        stock=p.stock,
        in_stock=p.stock > 0,
        sold_count=p.sold_count,
        image_urls=p.image_urls,
        origin_village_code=p.origin_village_code,
        status=p.status.value,
        certified=in_force,
        certificate=CertificateOut(
            number=p.certificate_number or "",
            issuer=p.certificate_issuer or "",
            valid_until=p.certificate_valid_until,
        )
        if in_force and p.certificate_valid_until
        else None,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


async def _out(session: SessionDep, product: Product, actor: User) -> ProductOut:
    return product_out(await catalog.get_listing(session, product.id, actor))


@router.post(
    "/cooperatives/{cooperative_id}/products",
    status_code=status.HTTP_201_CREATED,
    response_model=ProductOut,
    responses=ERRORS,
)
async def create_product(
    body: ProductCreate, session: SessionDep, actor: Manager, cooperative_id: uuid.UUID
) -> ProductOut:
    data = catalog.NewProduct(
        **body.model_dump(mode="json") | {"status": ProductStatus(body.status)}
    )
    product = await catalog.create_product(session, actor, cooperative_id, data)
    return await _out(session, product, actor)


@router.get(
    "/cooperatives/{cooperative_id}/products", response_model=PageOut[ProductOut], responses=ERRORS
)
async def cooperative_products(
    session: SessionDep,
    actor: Manager,
    cooperative_id: uuid.UUID,
    status: StatusName | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Cursor = None,
) -> PageOut[ProductOut]:
    page = await catalog.cooperative_products(
        session,
        actor,
        cooperative_id,
        status=ProductStatus(status) if status else None,
        limit=limit,
        cursor=cursor,
    )
    return PageOut(items=[product_out(item) for item in page.items], next_cursor=page.next_cursor)


@router.patch("/products/{product_id}", response_model=ProductOut, responses=ERRORS)
async def update_product(
    body: ProductPatch, session: SessionDep, actor: Manager, product_id: uuid.UUID
) -> ProductOut:
    changes = body.model_dump(mode="json", exclude_unset=True)
    if "status" in changes and changes["status"] is not None:
        changes["status"] = ProductStatus(changes["status"])
    product = await catalog.update_product(session, actor, product_id, changes)
    return await _out(session, product, actor)


@router.put("/products/{product_id}/certificate", response_model=ProductOut, responses=ERRORS)
async def certify(
    body: CertificateIn, session: SessionDep, actor: Certifier, product_id: uuid.UUID
) -> ProductOut:
    cert = catalog.Certificate(number=body.number, issuer=body.issuer, valid_until=body.valid_until)
    product = await catalog.certify(session, actor, product_id, cert)
    return await _out(session, product, actor)


@router.delete("/products/{product_id}/certificate", response_model=ProductOut, responses=ERRORS)
async def revoke_certificate(
    session: SessionDep, actor: Certifier, product_id: uuid.UUID
) -> ProductOut:
    product = await catalog.certify(session, actor, product_id, None)
    return await _out(session, product, actor)


def _shares_out(product_id: uuid.UUID, snapshot: catalog.ShareSnapshot) -> SharesOut:
    total = sum(s.basis_points for s in snapshot.shares)
    return SharesOut(
        product_id=product_id,
        effective_from=snapshot.effective_from,
        total_basis_points=total,
        cooperative_basis_points=catalog.MAX_BASIS_POINTS - total,
        shares=[
            ShareOut(household_id=s.household_id, basis_points=s.basis_points)
            for s in snapshot.shares
        ],
    )


@router.put("/products/{product_id}/supply-shares", response_model=SharesOut, responses=ERRORS)
async def set_supply_shares(
    session: SessionDep,
    actor: Manager,
    product_id: uuid.UUID,
    body: Annotated[list[ShareIn], Body(max_length=500)],
) -> SharesOut:
    snapshot = await catalog.set_shares(
        session,
        actor,
        product_id,
        [catalog.Share(s.household_id, s.basis_points) for s in body],
        now=now(),
    )
    return _shares_out(product_id, snapshot)


@router.get("/products/{product_id}/supply-shares", response_model=SharesOut, responses=ERRORS)
async def get_supply_shares(
    session: SessionDep, actor: CurrentUser, product_id: uuid.UUID
) -> SharesOut:
    snapshot = await catalog.get_shares(session, actor, product_id, now=now())
    return _shares_out(product_id, snapshot)


@router.get("/products", response_model=PageOut[ProductOut], responses=problem_responses(422))
async def list_products(
    request: Request,
    session: SessionDep,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=100, description="Words to find in title and description."),
    ] = None,
    category: Category | None = None,
    region: Annotated[RegionCode | None, Query(description="Any level; all below it.")] = None,
    certified: bool | None = None,
    min_price: Annotated[int | None, Query(ge=0, le=10**10, description="Fen.")] = None,
    max_price: Annotated[int | None, Query(ge=0, le=10**10, description="Fen.")] = None,
    in_stock: bool | None = None,
    sort: catalog.Sort = catalog.Sort.newest,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Cursor = None,
) -> Response:
    query = catalog.CatalogueQuery(
        q=q.strip() or None if q else None,
        category=category,
        region=region,
        certified=certified,
        min_price=min_price,
        max_price=max_price,
        in_stock=in_stock,
        sort=sort,
        limit=limit,
        cursor=cursor,
    )

    async def render() -> bytes:
        page = await catalog.catalogue(session, query, today=today())
        body = PageOut[ProductOut](
            items=[product_out(item) for item in page.items], next_cursor=page.next_cursor
        )
        # Serialised once here: the hottest route skips FastAPI's second validation pass.
        return body.model_dump_json().encode()

    cache = request.app.state.catalogue_cache
    payload = await cache.get_or_render(str(request.url.query), render)
    return Response(
        payload, media_type="application/json", headers={"Cache-Control": cache.cache_control}
    )


@router.get(
    "/products/{product_id}",
    response_model=ProductOut,
    responses={**problem_responses(401, 404, 422), 304: {"description": "Not modified"}},
)
async def get_product(
    request: Request, session: SessionDep, actor: MaybeUser, product_id: uuid.UUID
) -> Response:
    body = product_out(await catalog.get_listing(session, product_id, actor))
    payload = body.model_dump_json().encode()
    etag = '"' + hashlib.sha256(payload).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(payload, media_type="application/json", headers=headers)


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in candidates or etag in candidates
