"""The Stripe objects a fake account holds (PaymentIntents, charges, refunds, transfers).

Operations take the already parsed form parameters and answer (status, body) or
raise StripeFailure, exactly as the HTTP layer in stripe_server.py needs; they
are not thread-safe on their own (the HTTP layer holds its lock around them).

Not modelled: manual capture, 3-D Secure (`requires_action`), asynchronous
`processing` methods, disputes, failed refunds. Parameters for them are answered
with Stripe's "unknown parameter" error rather than silently ignored.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

from tests.fakes import stripe_forms as form
from tests.fakes.stripe_forms import StripeFailure
from tests.fakes.stripe_webhooks import make_event, new_id

Params = dict[str, Any]
Answer = tuple[int, dict[str, Any]]

# Test payment methods that Stripe's test mode declines.
DECLINING_PAYMENT_METHODS = frozenset({"pm_card_chargeDeclined", "pm_card_visa_chargeDeclined"})
_CANCELABLE = frozenset(
    {
        "requires_payment_method",
        "requires_capture",
        "requires_confirmation",
        "requires_action",
        "processing",
    }
)
_CONFIRMABLE = frozenset({"requires_payment_method", "requires_confirmation", "requires_action"})
_CANCELLATION_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer", "abandoned"})
_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
_CREATE_INTENT_PARAMS = frozenset(
    {
        "amount",
        "currency",
        "metadata",
        "automatic_payment_methods",
        "payment_method_types",
        "payment_method",
        "confirm",
        "description",
        "customer",
        "receipt_email",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "transfer_group",
        "return_url",
        "expand",
    }
)
_CONFIRM_PARAMS = frozenset({"payment_method", "return_url", "expand"})
_CANCEL_PARAMS = frozenset({"cancellation_reason", "expand"})
_REFUND_PARAMS = frozenset({"payment_intent", "charge", "amount", "metadata", "reason", "expand"})
_TRANSFER_PARAMS = frozenset(
    {
        "amount",
        "currency",
        "destination",
        "metadata",
        "transfer_group",
        "description",
        "source_transaction",
        "source_type",
        "expand",
    }
)


@dataclass
class Context:
    """Where an operation comes from, for the events it emits."""

    request_id: str
    idempotency_key: str | None


class StripeObjects:
    """PaymentIntents, charges, refunds, transfers and the events they would have sent."""

    def __init__(self, *, record_events: bool = True) -> None:
        self.record_events = record_events
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        # Connected accounts are not modelled: any `acct_...` destination exists.
        self.transfers: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []  # what Stripe would have sent to webhooks

    def clear(self) -> None:
        self.payment_intents.clear()
        self.charges.clear()
        self.refunds.clear()
        self.transfers.clear()
        self.events.clear()

    def create_intent(self, ctx: Context, params: Params, _: str) -> Answer:
        form.check_known(params, _CREATE_INTENT_PARAMS)
        form.required(params, "amount")
        amount = form.amount(params)
        assert amount is not None
        currency = form.currency(params)
        metadata = form.metadata(params)
        automatic = params.get("automatic_payment_methods")
        enabled = form.boolean(automatic, "enabled") if isinstance(automatic, dict) else False
        types = params.get("payment_method_types")
        confirm = form.boolean(params, "confirm")
        now = int(time.time())
        intent_id = new_id("pi")
        intent: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": {"allow_redirects": "always", "enabled": True}
            if enabled
            else None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": "automatic_async",
            "client_secret": f"{intent_id}_secret_{new_id('x', 25)[2:]}",
            "confirmation_method": "automatic",
            "created": now,
            "currency": currency,
            "customer": params.get("customer"),
            "description": params.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": metadata,
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": params.get("payment_method"),
            "payment_method_types": types if isinstance(types, list) else ["card"],
            "processing": None,
            "receipt_email": params.get("receipt_email"),
            "review": None,
            "setup_future_usage": None,
            "shipping": None,
            "statement_descriptor": params.get("statement_descriptor"),
            "statement_descriptor_suffix": params.get("statement_descriptor_suffix"),
            "status": "requires_confirmation"
            if params.get("payment_method")
            else "requires_payment_method",
            "transfer_data": None,
            "transfer_group": params.get("transfer_group"),
        }
        self.payment_intents[intent_id] = intent
        self._emit("payment_intent.created", intent, ctx)
        if confirm:
            return self.confirm(ctx, intent_id, None)
        return 200, intent

    def retrieve_intent(self, ctx: Context, params: Params, intent_id: str) -> Answer:
        return 200, self._intent(intent_id)

    def confirm_intent(self, ctx: Context, params: Params, intent_id: str) -> Answer:
        form.check_known(params, _CONFIRM_PARAMS)
        return self.confirm(ctx, intent_id, form.string(params, "payment_method"))

    def confirm(self, ctx: Context, intent_id: str, payment_method: str | None) -> Answer:
        """Pay with `payment_method`, else the one already attached, else a good test card."""
        intent = self._intent(intent_id)
        if intent["status"] not in _CONFIRMABLE:
            raise _unexpected_state(intent, "confirm")
        payment_method = payment_method or intent["payment_method"] or "pm_card_visa"
        intent["payment_method"] = payment_method
        if payment_method in DECLINING_PAYMENT_METHODS:
            error = {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
            }
            intent.update(status="requires_payment_method", last_payment_error=error)
            self._emit("payment_intent.payment_failed", intent, ctx)
            raise StripeFailure(
                402,
                "Your card was declined.",
                type="card_error",
                code="card_declined",
                stored=True,
                extra={"decline_code": "generic_decline", "payment_intent": copy.deepcopy(intent)},
            )
        charge_id = new_id("ch")
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "currency": intent["currency"],
            "created": int(time.time()),
            "livemode": False,
            "paid": True,
            "payment_intent": intent_id,
            "refunded": False,
            "status": "succeeded",
        }
        intent.update(
            status="succeeded",
            amount_received=intent["amount"],
            latest_charge=charge_id,
            last_payment_error=None,
        )
        self._emit("charge.succeeded", self.charges[charge_id], ctx)
        self._emit("payment_intent.succeeded", intent, ctx)
        return 200, intent

    def cancel_intent(self, ctx: Context, params: Params, intent_id: str) -> Answer:
        form.check_known(params, _CANCEL_PARAMS)
        reason = form.string(params, "cancellation_reason", _CANCELLATION_REASONS)
        intent = self._intent(intent_id)
        if intent["status"] not in _CANCELABLE:
            raise _unexpected_state(intent, "cancel")
        intent.update(status="canceled", canceled_at=int(time.time()), cancellation_reason=reason)
        self._emit("payment_intent.canceled", intent, ctx)
        return 200, intent

    def create_refund(self, ctx: Context, params: Params, _: str) -> Answer:
        form.check_known(params, _REFUND_PARAMS)
        amount = form.amount(params)
        metadata = form.metadata(params)
        reason = form.string(params, "reason", _REFUND_REASONS)
        intent_id = form.string(params, "payment_intent")
        charge_id = form.string(params, "charge")
        if intent_id is None and charge_id is None:
            raise StripeFailure(
                400, "One of the following params should be provided: charge, payment_intent."
            )
        if charge_id is not None:
            charge = self.charges.get(charge_id)
            if charge is None:
                raise _missing("charge", charge_id, "charge")
            intent = self._intent(charge["payment_intent"])
        else:
            intent = self._intent(intent_id, param="payment_intent")
        if intent["status"] != "succeeded" or intent["latest_charge"] is None:
            raise StripeFailure(
                400,
                f"This PaymentIntent ({intent['id']}) does not have a successful charge to refund.",
                code="payment_intent_unexpected_state",
                param="payment_intent",
                stored=True,
            )
        charge = self.charges[intent["latest_charge"]]
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining == 0:
            raise StripeFailure(
                400,
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
                stored=True,
            )
        if amount is not None and amount > remaining:
            raise StripeFailure(
                400,
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining}).",
                code="amount_too_large",
                param="amount",
                stored=True,
            )
        refund_id = new_id("re")
        refund: dict[str, Any] = {
            "id": refund_id,
            "object": "refund",
            "amount": remaining if amount is None else amount,
            "balance_transaction": new_id("txn"),
            "charge": charge["id"],
            "created": int(time.time()),
            "currency": charge["currency"],
            "destination_details": None,
            "metadata": metadata,
            "payment_intent": intent["id"],
            "reason": reason,
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": None,
        }
        self.refunds[refund_id] = refund
        charge["amount_refunded"] += refund["amount"]
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self._emit("refund.created", refund, ctx)
        self._emit("charge.refunded", charge, ctx)
        return 200, refund

    def retrieve_refund(self, ctx: Context, params: Params, refund_id: str) -> Answer:
        refund = self.refunds.get(refund_id)
        if refund is None:
            raise _missing("refund", refund_id, "id")
        return 200, refund

    def create_transfer(self, ctx: Context, params: Params, _: str) -> Answer:
        """Separate charges and transfers: from the platform's balance to a connected account."""
        form.check_known(params, _TRANSFER_PARAMS)
        form.required(params, "amount")
        form.required(params, "currency")
        form.required(params, "destination")
        amount = form.amount(params)
        assert amount is not None
        currency = form.currency(params)
        metadata = form.metadata(params)
        destination = form.string(params, "destination")
        if destination is None or not destination.startswith("acct_"):
            raise StripeFailure(
                400,
                f"No such destination: '{destination}'",
                code="resource_missing",
                param="destination",
            )
        transfer_id = new_id("tr")
        transfer: dict[str, Any] = {
            "id": transfer_id,
            "object": "transfer",
            "amount": amount,
            "amount_reversed": 0,
            "balance_transaction": new_id("txn"),
            "created": int(time.time()),
            "currency": currency,
            "description": form.string(params, "description"),
            "destination": destination,
            "destination_payment": new_id("py"),
            "livemode": False,
            "metadata": metadata,
            "reversals": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/transfers/{transfer_id}/reversals",
            },
            "reversed": False,
            "source_transaction": form.string(params, "source_transaction"),
            "source_type": form.string(params, "source_type") or "card",
            "transfer_group": form.string(params, "transfer_group"),
        }
        self.transfers[transfer_id] = transfer
        self._emit("transfer.created", transfer, ctx)
        return 200, transfer

    def retrieve_transfer(self, ctx: Context, params: Params, transfer_id: str) -> Answer:
        transfer = self.transfers.get(transfer_id)
        if transfer is None:
            raise _missing("transfer", transfer_id, "id")
        return 200, transfer

    def _intent(self, intent_id: Any, *, param: str = "intent") -> dict[str, Any]:
        intent = self.payment_intents.get(intent_id) if isinstance(intent_id, str) else None
        if intent is None:
            raise _missing("payment_intent", intent_id, param)
        return intent

    def _emit(self, type: str, obj: dict[str, Any], ctx: Context) -> None:
        if not self.record_events:
            return
        self.events.append(
            make_event(type, obj, request_id=ctx.request_id, idempotency_key=ctx.idempotency_key)
        )


def _missing(kind: str, object_id: Any, param: str) -> StripeFailure:
    return StripeFailure(
        404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param
    )


def _unexpected_state(intent: dict[str, Any], action: str) -> StripeFailure:
    allowed = _CANCELABLE if action == "cancel" else _CONFIRMABLE
    return StripeFailure(
        400,
        f"You cannot {action} this PaymentIntent because it has a status of {intent['status']}. "
        f"Only a PaymentIntent with one of the following statuses may be {action}ed: "
        f"{', '.join(sorted(allowed))}.",
        code="payment_intent_unexpected_state",
        stored=True,
        extra={"payment_intent": copy.deepcopy(intent)},
    )
