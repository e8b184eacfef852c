"""Stripe at the edge: PaymentIntents, refunds, transfers and webhooks in our own types.

Everything the rest of the code knows about Stripe's wire format and its library's
exception zoo stays in this module; callers see dataclasses and three exceptions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import quote_plus

import aiohttp
import stripe

# Stripe's own default, and the value DESIGN rule 3 names.
WEBHOOK_TOLERANCE_SECONDS = 300
# Stripe's documented limit; a longer key is a 400 from Stripe anyway, so fail first.
MAX_IDEMPOTENCY_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class StripeConfig:
    """How to reach Stripe.

    `timeout_seconds` bounds each phase of one attempt (connect, read, ...), and the
    library retries timeouts, 409s and 5xx with 0.5-5 s back-off: with the defaults
    a call that keeps hanging gives up after roughly 3 x 10 s + 1.5 s.
    """

    api_key: str = field(repr=False)  # secrets stay out of logs and tracebacks
    webhook_secret: str = field(repr=False)
    api_base: str | None = None  # e.g. "http://127.0.0.1:PORT" for the fake; None = real Stripe
    timeout_seconds: float = 10.0
    max_network_retries: int = 2


@dataclass(frozen=True, slots=True)
class Intent:
    id: str
    status: str
    amount: int
    currency: str  # upper-case ISO 4217, like the rest of our code ("CNY")
    client_secret: str | None
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class RefundResult:
    id: str
    status: str
    amount: int
    payment_intent: str | None


@dataclass(frozen=True, slots=True)
class TransferResult:
    """A Transfer from the platform's balance to a connected account."""

    id: str
    amount: int
    currency: str  # upper-case, like Intent.currency
    destination: str
    transfer_group: str | None


@dataclass(frozen=True, slots=True)
class Event:
    """A verified webhook event, reduced to what we use."""

    id: str
    type: str
    created: datetime  # UTC
    livemode: bool
    object_id: str | None
    object: dict[str, Any]  # data.object as a plain dict
    payload: dict[str, Any]  # the whole event as a plain JSON dict
    # The verified body as Stripe sent it (JSON text), stored as it came instead of
    # serialising `payload` again; None for an event built here (the demo).
    body: str | None = None


class ProviderError(Exception):
    """Stripe could not be reached, timed out, or answered 5xx/409/429: retry later.

    The operation may or may not have happened; retrying with the same idempotency
    key is what makes that safe.
    """

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


class ProviderRejected(Exception):
    """Stripe answered a 4xx other than 409/429: the request is wrong; do not blindly retry.

    Card declines, invalid parameters, an idempotency key reused with other
    parameters, a bad API key. `code` is Stripe's error code ("card_declined",
    "amount_too_large", ...) or, when Stripe sends none, its error type
    ("idempotency_error").
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        param: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.param = param
        self.error_type = error_type

    def __str__(self) -> str:
        return f"{self.message} (code={self.code})" if self.code else self.message


class InvalidSignature(Exception):
    """A webhook delivery that is not provably from Stripe, or not an event at all."""


# 409 is Stripe's "another request with this key or on this object is in flight"
# (lock_timeout, a concurrent idempotent request): the library itself retries it,
# so by the time it reaches us it means "later", not "never".
_RETRY_LATER_STATUSES = frozenset({409, 429})
_REJECTIONS = (
    stripe.CardError,
    stripe.InvalidRequestError,
    stripe.IdempotencyError,
    stripe.AuthenticationError,
    stripe.PermissionError,
)


def _translate(exc: stripe.StripeError) -> NoReturn:
    """Raise our exception for a Stripe library exception, keeping it as the cause."""
    message = exc.user_message or type(exc).__name__
    status = exc.http_status
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        raise ProviderError(message, http_status=status) from exc
    if isinstance(exc, _REJECTIONS) or (
        status is not None and 400 <= status < 500 and status not in _RETRY_LATER_STATUSES
    ):
        error_type = exc.error.type if exc.error is not None else None
        raise ProviderRejected(
            message,
            code=exc.code or error_type,
            http_status=status,
            param=getattr(exc, "param", None),
            error_type=error_type,
        ) from exc
    # APIError is the library's catch-all: 5xx and 409, but also an unreadable body
    # on a 2xx, where the operation may well have happened. All of it means
    # "find out later, with the same idempotency key".
    raise ProviderError(message, http_status=status) from exc


def _require_id(value: str, what: str) -> None:
    # An empty id would turn GET /v1/payment_intents/{id} into the list endpoint.
    if not value.strip():
        raise ValueError(f"{what} must not be empty")


def _require_key(idempotency_key: str) -> None:
    # stripe-python silently substitutes a random key for a falsy one, which would
    # turn our retry into a second charge.
    if not idempotency_key:
        raise ValueError("idempotency_key must not be empty")
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(f"idempotency_key longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters")


def _str(data: dict[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _unreadable(what, key)
    return value


def _int(data: dict[str, Any], key: str, what: str) -> int:
    value = data.get(key)
    if type(value) is not int:  # bool is an int subclass; Stripe never sends one here
        raise _unreadable(what, key)
    return value


def _path(object_id: str) -> str:
    # As the library puts an id in a path: every reserved character escaped.
    return quote_plus(object_id)


def _unreadable(what: str, key: str) -> ProviderError:
    # A 2xx we cannot read: the operation may well have happened, so this is a
    # "find out later" (retry with the same key, or reconcile), never a rejection.
    return ProviderError(f"unreadable {what} from Stripe: bad or missing {key!r}")


def _intent(data: dict[str, Any]) -> Intent:
    secret = data.get("client_secret")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise _unreadable("payment intent", "metadata")
    return Intent(
        id=_str(data, "id", "payment intent"),
        status=_str(data, "status", "payment intent"),
        amount=_int(data, "amount", "payment intent"),
        currency=_str(data, "currency", "payment intent").upper(),
        client_secret=secret if isinstance(secret, str) else None,
        metadata={str(k): str(v) for k, v in metadata.items()},
    )


def _refund(data: dict[str, Any]) -> RefundResult:
    payment_intent = data.get("payment_intent")
    if isinstance(payment_intent, dict):  # when expanded
        payment_intent = payment_intent.get("id")
    return RefundResult(
        id=_str(data, "id", "refund"),
        status=_str(data, "status", "refund"),
        amount=_int(data, "amount", "refund"),
        payment_intent=payment_intent if isinstance(payment_intent, str) else None,
    )


def _transfer(data: dict[str, Any]) -> TransferResult:
    destination = data.get("destination")
    if isinstance(destination, dict):  # when expanded
        destination = destination.get("id")
    if not isinstance(destination, str):
        raise _unreadable("transfer", "destination")
    group = data.get("transfer_group")
    return TransferResult(
        id=_str(data, "id", "transfer"),
        amount=_int(data, "amount", "transfer"),
        currency=_str(data, "currency", "transfer").upper(),
        destination=destination,
        transfer_group=group if isinstance(group, str) else None,
    )


class StripeGateway:
    """One Stripe account, one HTTP connection pool; safe to share across tasks."""

    def __init__(self, config: StripeConfig) -> None:
        # The library reports request timings and machine details to Stripe by
        # default; a service holding personal data sends nothing it need not.
        stripe.enable_telemetry = False
        self._config = config
        # aiohttp, one of the library's two asynchronous transports: a Stripe checkout
        # spent about a fifth of the API worker's CPU inside httpx's request path; with
        # aiohttp the same checkouts ran about 20% faster (bench, same hour, alternated).
        # Its session, made on the first request, keeps the connections alive.
        self._http = stripe.AIOHTTPClient(
            timeout=aiohttp.ClientTimeout(total=config.timeout_seconds)
        )
        self._client = stripe.StripeClient(
            config.api_key,
            base_addresses={"api": config.api_base} if config.api_base else {},
            http_client=self._http,
            max_network_retries=config.max_network_retries,
        )

    async def create_payment_intent(
        self, *, amount: int, currency: str, metadata: dict[str, str], idempotency_key: str
    ) -> Intent:
        if amount <= 0:
            raise ValueError("amount must be positive (minor units)")
        _require_key(idempotency_key)
        data = await self._request(
            "post",
            "/v1/payment_intents",
            {
                "amount": amount,
                "currency": currency.lower(),
                "metadata": metadata,
                "automatic_payment_methods": {"enabled": True},
            },
            idempotency_key=idempotency_key,
        )
        return _intent(data)

    async def retrieve_payment_intent(self, intent_id: str) -> Intent:
        _require_id(intent_id, "intent_id")
        return _intent(await self._request("get", f"/v1/payment_intents/{_path(intent_id)}", {}))

    async def cancel_payment_intent(self, intent_id: str, *, idempotency_key: str) -> Intent:
        """Cancel; an intent that is already canceled is returned as it is."""
        _require_id(intent_id, "intent_id")
        _require_key(idempotency_key)
        path = f"/v1/payment_intents/{_path(intent_id)}/cancel"
        try:
            data = await self._request("post", path, {}, idempotency_key=idempotency_key)
        except ProviderRejected as exc:
            if exc.code != "payment_intent_unexpected_state":
                raise
            # Stripe refuses to cancel twice; re-read to tell "already done" (fine)
            # from "succeeded meanwhile" (the caller must refund instead).
            current = await self.retrieve_payment_intent(intent_id)
            if current.status == "canceled":
                return current
            raise
        return _intent(data)

    async def create_refund(
        self,
        *,
        payment_intent: str,
        amount: int,
        idempotency_key: str,
        metadata: dict[str, str],
    ) -> RefundResult:
        _require_id(payment_intent, "payment_intent")
        if amount <= 0:
            # Always an explicit, positive amount: Stripe reads an absent one as
            # "refund everything that is left".
            raise ValueError("amount must be positive (minor units)")
        _require_key(idempotency_key)
        data = await self._request(
            "post",
            "/v1/refunds",
            {"payment_intent": payment_intent, "amount": amount, "metadata": metadata},
            idempotency_key=idempotency_key,
        )
        return _refund(data)

    async def create_transfer(
        self,
        *,
        amount: int,
        currency: str,
        destination: str,
        transfer_group: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> TransferResult:
        """Move `amount` from the platform's balance to a connected account (acct_...)."""
        _require_id(destination, "destination")
        if amount <= 0:
            raise ValueError("amount must be positive (minor units)")
        _require_key(idempotency_key)
        data = await self._request(
            "post",
            "/v1/transfers",
            {
                "amount": amount,
                "currency": currency.lower(),
                "destination": destination,
                "transfer_group": transfer_group,
                "metadata": metadata,
            },
            idempotency_key=idempotency_key,
        )
        return _transfer(data)

    async def _request(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One call through the library's raw request: its headers, encoding, retries and
        errors, answered as the JSON object Stripe sent.

        The typed services (`client.v1.payment_intents.create_async`, ...) build a
        StripeObject tree from the answer, which we only turned back into a dict: a
        third of a PaymentIntent call's CPU (in process, against the test fake).
        """
        options = {} if idempotency_key is None else {"idempotency_key": idempotency_key}
        try:
            response = await self._client.raw_request_async(method, path, **params, **options)
        except stripe.StripeError as exc:
            _translate(exc)
        data = response.data
        if not isinstance(data, dict):
            raise ProviderError(f"unreadable answer from Stripe to {method.upper()} {path}")
        return data

    def verify_event(self, payload: bytes, signature: str | None) -> Event:
        """Check the Stripe-Signature header and read the event; anything doubtful is invalid.

        The library's `Webhook.construct_event` is `WebhookSignature.verify_header`
        followed by building a StripeObject; we call the verification directly and
        parse ourselves, because that second step leaks AttributeError on JSON that
        is not an object and we want plain dicts anyway.
        """
        try:
            stripe.WebhookSignature.verify_header(
                payload,
                signature,
                self._config.webhook_secret,
                tolerance=WEBHOOK_TOLERANCE_SECONDS,
            )
        except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
            raise InvalidSignature(str(exc)) from exc
        try:
            body = payload.decode()
            data = json.loads(body)
        except ValueError as exc:  # UnicodeDecodeError included
            raise InvalidSignature("payload is not JSON") from exc
        return _event(data, body)

    async def aclose(self) -> None:
        # stripe-python leaves close_async unannotated.
        await self._http.close_async()  # type: ignore[no-untyped-call]


def _event(data: Any, text: str | None) -> Event:
    if not isinstance(data, dict) or data.get("object") != "event":
        raise InvalidSignature("payload is not a Stripe event")
    event_id, event_type, created = data.get("id"), data.get("type"), data.get("created")
    body = data.get("data")
    obj = body.get("object") if isinstance(body, dict) else None
    if (
        not isinstance(event_id, str)
        or not isinstance(event_type, str)
        or type(created) is not int
        or not isinstance(obj, dict)
    ):
        raise InvalidSignature("payload is not a Stripe event")
    object_id = obj.get("id")
    return Event(
        id=event_id,
        type=event_type,
        created=datetime.fromtimestamp(created, UTC),
        livemode=data.get("livemode") is True,
        object_id=object_id if isinstance(object_id, str) else None,
        object=obj,
        payload=data,
        body=text,
    )
