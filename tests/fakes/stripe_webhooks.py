"""Stripe webhook deliveries for tests: Event objects shaped like Stripe's, really signed."""

from __future__ import annotations

import json
import secrets
import string
import time
from collections.abc import Mapping, Sequence
from typing import Any

import stripe

# The version the installed library speaks; Stripe stamps events with the account's.
API_VERSION: str = stripe.api_version

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """An id in Stripe's style (`pi_3Mt...`): random, so ids never repeat across fakes.

    One read of the system's randomness for the whole id (a `secrets.choice` per
    character read it 24 times: a sixth of the fake's CPU per PaymentIntent).
    """
    drawn = secrets.token_bytes(length)
    return f"{prefix}_" + "".join(_ALPHABET[b % len(_ALPHABET)] for b in drawn)


def make_event(
    type: str,
    obj: Mapping[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
    previous_attributes: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """A snapshot Event as Stripe delivers it, wrapping a copy of `obj`."""
    data: dict[str, Any] = {"object": json.loads(json.dumps(obj))}
    if previous_attributes is not None:
        data["previous_attributes"] = dict(previous_attributes)
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()) if created is None else created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": request_id, "idempotency_key": idempotency_key},
        "type": type,
    }


def sign(
    payload: bytes,
    secret: str,
    timestamp: int | None = None,
    *,
    also_signed_with: Sequence[str] = (),
) -> str:
    """The `Stripe-Signature` header for `payload`, as Stripe computes it.

    `also_signed_with` adds one more v1 signature per secret, which is what Stripe
    sends while an endpoint secret is being rolled.
    """
    t = int(time.time()) if timestamp is None else timestamp
    text = payload.decode("utf-8")  # the library signs the text form of the body
    header: str = stripe.WebhookSignature.generate_signature_header(text, secret, timestamp=t)
    for other in also_signed_with:
        extra: str = stripe.WebhookSignature.generate_signature_header(text, other, timestamp=t)
        header += "," + extra.split(",", 1)[1]
    return header


def webhook_delivery(
    event: Mapping[str, Any], secret: str, *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of one POST of `event` to a webhook endpoint."""
    body = json.dumps(event, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign(body, secret, timestamp),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }
    return body, headers
