"""Shipments: registering parcels, their timelines, manual events and provider webhooks."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import JSONResponse, Response

from app.deps import CurrentUser, Cursor, Limit, SessionDep, SettingsDep, now, require
from app.errors import problem
from app.routing import PlainRoute
from app.schemas.common import PageOut
from app.schemas.problem import problem_responses
from app.schemas.tracking import (
    ManualEventIn,
    OrderTrackingOut,
    ShipmentAlert,
    ShipmentEventOut,
    ShipmentIn,
    ShipmentOut,
    ShipmentSummary,
    TrackingStatusName,
)
from app.settings import Settings
from services.tracking import service as tracking
from services.tracking.models import ManualEvent, Shipment, Source
from services.tracking.polling import Providers
from services.tracking.vocabulary import InvalidSignature, MalformedPush, TrackingStatus
from services.users.models import Role, User

router = APIRouter(prefix="/v1", tags=["tracking"])
# The providers' pushes, called without FastAPI's request handler (see app.routing),
# and matched before the routes above: they are most of this API's traffic.
webhook_router = APIRouter(prefix="/v1", tags=["tracking"], route_class=PlainRoute)
logger = logging.getLogger(__name__)
ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422)
Shipper = Annotated[User, Depends(require(Role.admin, Role.manager))]
Reporter = Annotated[User, Depends(require(Role.admin, Role.manager, Role.site_operator))]
SiteOperator = Annotated[User, Depends(require(Role.admin, Role.site_operator))]
OptionalKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="A retry with the same key records nothing new.",
    ),
]


def summary_fields(s: Shipment) -> dict[str, Any]:
    return {
        "id": s.id,
        "order_id": s.order_id,
        "fulfilment_id": s.fulfilment_id,
        "carrier": s.carrier,
        "tracking_number": s.tracking_number,
        "provider": s.provider.value,
        "status": s.status.value,
        "status_at": s.status_at,
        "last_event_at": s.last_event_at,
        "delivered_at": s.delivered_at,
        "pickup_site_id": s.pickup_site_id,
        "created_at": s.created_at,
    }


def shipment_out(view: tracking.ShipmentView) -> ShipmentOut:
    return ShipmentOut(
        **summary_fields(view.shipment),
        events=[
            ShipmentEventOut(
                status=e.status.value,
                source=e.source.value,
                kind=e.kind.value if e.kind is not None else None,
                raw_status=e.raw_status,
                occurred_at=e.occurred_at,
                location=e.location,
                description=e.description,
            )
            for e in view.events
        ],
    )


def default_provider(settings: Settings, providers: Providers) -> Source:
    if settings.tracking_provider is not None:
        return Source(settings.tracking_provider)
    for adapter in providers.by_name.values():
        if adapter.can_push or adapter.can_poll:
            return Source(adapter.name)
    return Source.manual


@router.post(
    "/fulfilments/{fulfilment_id}/shipments",
    status_code=status.HTTP_201_CREATED,
    response_model=ShipmentOut,
    responses={**ERRORS, 200: {"description": "This parcel was registered already."}},
)
async def create_shipment(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: Shipper,
    fulfilment_id: uuid.UUID,
    body: ShipmentIn,
) -> JSONResponse:
    """Register a parcel; the first one ships the fulfilment. Registering it again is a no-op."""
    providers: Providers = request.app.state.tracking
    provider = Source(body.provider) if body.provider else default_provider(settings, providers)
    at = now()
    view, created = await tracking.create_shipment(
        session,
        actor,
        fulfilment_id,
        carrier=body.carrier,
        tracking_number=body.tracking_number,
        provider=provider,
        poll_from=providers.first_poll(provider, at),
        now=at,
    )
    return JSONResponse(
        shipment_out(view).model_dump(mode="json"), status_code=201 if created else 200
    )


@router.get("/shipments/{shipment_id}", response_model=ShipmentOut, responses=ERRORS)
async def get_shipment(
    session: SessionDep, actor: CurrentUser, shipment_id: uuid.UUID
) -> ShipmentOut:
    return shipment_out(await tracking.get_for(session, actor, shipment_id))


@router.post(
    "/shipments/{shipment_id}/events",
    status_code=status.HTTP_201_CREATED,
    response_model=ShipmentOut,
    responses={**ERRORS, 200: {"description": "The same event was recorded already."}},
)
async def record_event(
    session: SessionDep,
    actor: Reporter,
    shipment_id: uuid.UUID,
    body: ManualEventIn,
    key: OptionalKey = None,
) -> JSONResponse:
    """Handed over, received at the site, picked up, delivered, cash collected, refused."""
    view, new = await tracking.record_manual_event(
        session,
        actor,
        shipment_id,
        tracking.ManualReport(
            kind=ManualEvent(body.kind),
            occurred_at=body.occurred_at,
            location=body.location,
            note=body.note,
            amount_fen=body.amount_fen,
            idempotency_key=key,
        ),
        now=now(),
    )
    return JSONResponse(shipment_out(view).model_dump(mode="json"), status_code=201 if new else 200)


@router.get("/orders/{order_id}/tracking", response_model=OrderTrackingOut, responses=ERRORS)
async def order_tracking(
    session: SessionDep, actor: CurrentUser, order_id: uuid.UUID
) -> OrderTrackingOut:
    order, views = await tracking.tracking_for(session, actor, order_id)
    return OrderTrackingOut(
        order_id=order.id,
        order_status=order.status.value,
        shipments=[shipment_out(v) for v in views],
    )


@router.get(
    "/cooperatives/{cooperative_id}/shipment-alerts",
    response_model=PageOut[ShipmentAlert],
    responses=ERRORS,
)
async def shipment_alerts(
    session: SessionDep,
    settings: SettingsDep,
    actor: Shipper,
    cooperative_id: uuid.UUID,
    limit: Limit = 20,
    cursor: Cursor = None,
    stale_days: Annotated[
        int | None,
        Query(ge=1, le=365, description="Days without news; default from the settings."),
    ] = None,
) -> PageOut[ShipmentAlert]:
    """Parcels in exception, after a failed attempt, returned, or silent for too long."""
    days = stale_days or settings.tracking_stale_days
    page = await tracking.needing_attention(
        session,
        actor,
        cooperative_id,
        stale_before=now() - timedelta(days=days),
        limit=limit,
        cursor=cursor,
    )
    return PageOut(
        items=[
            ShipmentAlert(**summary_fields(s), reason=tracking.attention_reason(s))
            for s in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/service-sites/{site_id}/shipments",
    response_model=PageOut[ShipmentSummary],
    responses=ERRORS,
)
async def site_parcels(
    session: SessionDep,
    actor: SiteOperator,
    site_id: uuid.UUID,
    limit: Limit = 20,
    cursor: Cursor = None,
    status: Annotated[TrackingStatusName | None, Query()] = None,
) -> PageOut[ShipmentSummary]:
    """The parcels addressed to a village service site, newest first."""
    page = await tracking.at_site(
        session,
        actor,
        site_id,
        status=TrackingStatus(status) if status else None,
        limit=limit,
        cursor=cursor,
    )
    return PageOut(
        items=[ShipmentSummary(**summary_fields(s)) for s in page.items],
        next_cursor=page.next_cursor,
    )


@webhook_router.post(
    "/webhooks/tracking/{provider}",
    response_model=dict[str, Any],
    responses=problem_responses(400, 404, 413, 422, 503),
    tags=["webhooks"],
)
async def tracking_webhook(request: Request, provider: str) -> Response:
    """A provider's signed push: verified, each event stored once, the parcel moved forward.

    Each parcel's report is applied atomically by itself (no request-wide transaction).
    Answers the acknowledgement the provider expects (Kuaidi100 wants its own body).
    """
    providers: Providers = request.app.state.tracking
    adapter = providers.get(provider)
    if adapter is None:
        return problem(404, "unknown-provider", f"No tracking provider named {provider!r}.")
    if not adapter.can_push:
        return problem(
            503,
            "provider-not-configured",
            f"Pushes from {provider} are not configured here.",
            headers={"Retry-After": "3600"},
        )
    body = await request.body()
    try:
        adapter.verify(body, request.headers)
        updates = adapter.parse_push(body, request.headers)
    except InvalidSignature as exc:
        # Nothing is stored for an unverified caller: a log line is all it leaves.
        logger.warning(
            "tracking webhook with a bad signature", extra={"provider": provider, "error": str(exc)}
        )
        return problem(400, "invalid-signature", "The push's signature does not verify.")
    except MalformedPush as exc:
        logger.warning("unreadable tracking push", extra={"provider": provider, "error": str(exc)})
        return problem(422, "malformed-push", f"The push cannot be read: {exc}")
    at = now()
    for update in updates:
        received = await tracking.receive_pushed(request.app.state.sessionmaker, update, now=at)
        if received.outcome == "unknown-parcel":
            logger.info(
                "tracking push for an unknown parcel",
                extra={"provider": provider, "tracking_number": update.tracking_number},
            )
    return JSONResponse(dict(adapter.acknowledgement()))
