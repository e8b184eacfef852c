"""Signed callbacks from outside systems."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response

from app.deps import now
from app.errors import problem
from app.routing import PlainRoute
from app.schemas.orders import WebhookAck
from app.schemas.problem import problem_responses
from services.jobs.service import enqueue
from services.payments import service as payments
from services.payments.stripe import InvalidSignature, StripeGateway

# Called without FastAPI's request handler: see app.routing.
router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=PlainRoute)
logger = logging.getLogger(__name__)


@router.post("/stripe", response_model=WebhookAck, responses=problem_responses(400, 413, 503))
async def stripe_webhook(
    request: Request,
    stripe_signature: str | None = Header(default=None, alias="Stripe-Signature"),
) -> Response:
    """Verify, store once, apply forward-only; atomically, answered at once."""
    gateway: StripeGateway | None = request.app.state.stripe
    if gateway is None:
        return problem(
            503,
            "stripe-not-configured",
            "Stripe is not configured here.",
            headers={"Retry-After": "3600"},
        )
    payload = await request.body()
    try:
        event = gateway.verify_event(payload, stripe_signature)
    except InvalidSignature as exc:
        # Nothing is stored for an unverified caller: a log line is all it leaves.
        logger.warning("stripe webhook with a bad signature", extra={"error": str(exc)})
        return problem(
            400,
            "invalid-signature",
            "The Stripe-Signature header does not verify.",
            instance=request.url.path,
        )
    received = await payments.receive(
        request.app.state.sessionmaker, event, now=now(), enqueue=enqueue
    )
    ack = WebhookAck(received=True, duplicate=received.duplicate, outcome=received.outcome)
    return Response(ack.model_dump_json(), media_type="application/json")
