"""The Stripe adapter against a fake Stripe on a real local port: no database needed.

The real stripe-python client does the HTTP, so its encoding, retries, timeouts and
error classes are part of what these tests pin down.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.payments.stripe import (
    Event,
    Intent,
    InvalidSignature,
    ProviderError,
    ProviderRejected,
    StripeConfig,
    StripeGateway,
)
from tests.fakes.serving import serve_in_thread
from tests.fakes.stripe_server import (
    FakeStripeServer,
    make_event,
    serve_fake_stripe,
    sign,
    webhook_delivery,
)

API_KEY = "sk_test_marketplace"
SECRET = "whsec_test_secret"
CREATE = "POST /v1/payment_intents"
REFUND = "POST /v1/refunds"

MakeGateway = Callable[..., StripeGateway]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStripeServer]:
    with serve_fake_stripe() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeStripeServer) -> None:
    fake.state.reset()


@pytest.fixture
async def make_gateway(fake: FakeStripeServer) -> AsyncIterator[MakeGateway]:
    made: list[StripeGateway] = []

    def make(**overrides: Any) -> StripeGateway:
        settings: dict[str, Any] = {
            "api_key": API_KEY,
            "webhook_secret": SECRET,
            "api_base": fake.url,
            "timeout_seconds": 2.0,
        }
        settings.update(overrides)
        gateway = StripeGateway(StripeConfig(**settings))
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        await gateway.aclose()


@pytest.fixture
def gateway(make_gateway: MakeGateway) -> StripeGateway:
    return make_gateway()


async def _intent(gateway: StripeGateway, amount: int = 1000, key: str = "order:1:pi") -> Intent:
    return await gateway.create_payment_intent(
        amount=amount, currency="CNY", metadata={"order_id": "1"}, idempotency_key=key
    )


async def _paid_intent(gateway: StripeGateway, fake: FakeStripeServer, amount: int) -> Intent:
    intent = await _intent(gateway, amount)
    fake.state.confirm(intent.id)
    return intent


# -- payment intents -----------------------------------------------------------------


async def test_create_sends_minor_units_lowercase_currency_and_automatic_methods(
    gateway: StripeGateway, fake: FakeStripeServer
) -> None:
    intent = await gateway.create_payment_intent(
        amount=12_345, currency="CNY", metadata={"order_id": "o-1"}, idempotency_key="order:o-1:pi"
    )

    sent = fake.state.requests[-1]
    assert sent.params == {
        "amount": "12345",
        "currency": "cny",
        "metadata": {"order_id": "o-1"},
        "automatic_payment_methods": {"enabled": "true"},
    }
    assert sent.idempotency_key == "order:o-1:pi"
    assert intent.id.startswith("pi_")
    assert intent.status == "requires_payment_method"
    assert (intent.amount, intent.currency) == (12_345, "CNY")
    assert intent.client_secret is not None
    assert intent.client_secret.startswith(f"{intent.id}_secret_")
    assert intent.metadata == {"order_id": "o-1"}


async def test_retrieve_reads_the_current_state(
    gateway: StripeGateway, fake: FakeStripeServer
) -> None:
    intent = await _intent(gateway)
    fake.state.confirm(intent.id)

    current = await gateway.retrieve_payment_intent(intent.id)

    assert current.id == intent.id
    assert current.status == "succeeded"


async def test_retrieving_an_unknown_intent_is_rejected(gateway: StripeGateway) -> None:
    with pytest.raises(ProviderRejected) as caught:
        await gateway.retrieve_payment_intent("pi_doesnotexist")
    assert caught.value.code == "resource_missing"
    assert caught.value.http_status == 404


async def test_same_key_and_parameters_return_the_first_intent(
    gateway: StripeGateway, fake: FakeStripeServer
) -> None:
    first = await _intent(gateway, key="order:7:pi")
    again = await _intent(gateway, key="order:7:pi")

    assert again == first
    assert len(fake.state.payment_intents) == 1
    assert fake.state.requests[-1].replayed


async def test_same_key_with_other_parameters_is_rejected(
    gateway: StripeGateway, fake: FakeStripeServer
) -> None:
    await _intent(gateway, amount=1000, key="order:8:pi")

    with pytest.raises(ProviderRejected) as caught:
        await _intent(gateway, amount=2000, key="order:8:pi")

    assert caught.value.code == "idempotency_error"
    assert caught.value.http_status == 400
    assert len(fake.state.payment_intents) == 1


async def test_idempotency_keys_belong_to_one_api_key(
    make_gateway: MakeGateway, fake: FakeStripeServer
) -> None:
    ours = await _intent(make_gateway(), key="order:9:pi")
    theirs = await _intent(make_gateway(api_key="sk_test_another_account"), key="order:9:pi")

    assert theirs.id != ours.id


async def test_an_empty_idempotency_key_is_refused_before_calling_stripe(
    gateway: StripeGateway, fake: FakeStripeServer
) -> None:
    # stripe-python would quietly put a random key in its place.
    with pytest.raises(ValueError, match="idempotency_key"):
        await _intent(gateway, key="")
    assert fake.state.calls[CREATE] == 0


async def test_cancel_moves_the_intent_to_canceled(gateway: StripeGateway) -> None:
    intent = await _intent(gateway)

    canceled = await gateway.cancel_payment_intent(intent.id, idempotency_key="order:1:cancel")

    assert canceled.status == "canceled"


async def test_cancelling_a_canceled_intent_returns_it(gateway: StripeGateway) -> None:
    intent = await _intent(gateway)
    await gateway.cancel_payment_intent(intent.id, idempotency_key="expiry:1")

    again = await gateway.cancel_payment_intent(intent.id, idempotency_key="buyer-cancel:1")

    assert again.id == intent.id
    assert again.status == "canceled"


async def test_cancelling_a_succeeded_intent_is_rejected(
    gateway: StripeGateway, fake: FakeStripeServer
) -> None:
    intent = await _paid_intent(gateway, fake, 1000)

    with pytest.raises(ProviderRejected) as caught:
        await gateway.cancel_payment_intent(intent.id, idempotency_key="order:1:cancel")

    assert caught.value.code == "payment_intent_unexpected_state"


# -- refunds -------------------------------------------------------------------------


async def test_partial_refunds_add_up_to_the_amount_and_no_further(
    gateway: StripeGateway, fake: FakeStripeServer
) -> None:
    intent = await _paid_intent(gateway, fake, 1000)

    first = await gateway.create_refund(
        payment_intent=intent.id, amount=300, idempotency_key="refund:1", metadata={"r": "1"}
    )
    rest = await gateway.create_refund(
        payment_intent=intent.id, amount=700, idempotency_key="refund:2", metadata={}
    )
    with pytest.raises(ProviderRejected) as caught:
        await gateway.create_refund(
            payment_intent=intent.id, amount=1, idempotency_key="refund:3", metadata={}
        )

    assert first.id.startswith("re_")
    assert (first.status, first.amount, first.payment_intent) == ("succeeded", 300, intent.id)
    assert rest.amount == 700
    assert caught.value.code == "charge_already_refunded"
    assert fake.state.refunds[first.id]["metadata"] == {"r": "1"}


async def test_a_refund_above_what_is_left_is_rejected(
    gateway: StripeGateway, fake: FakeStripeServer
) -> None:
    intent = await _paid_intent(gateway, fake, 1000)
    await gateway.create_refund(
        payment_intent=intent.id, amount=600, idempotency_key="refund:1", metadata={}
    )

    with pytest.raises(ProviderRejected) as caught:
        await gateway.create_refund(
            payment_intent=intent.id, amount=401, idempotency_key="refund:2", metadata={}
        )

    assert caught.value.code == "amount_too_large"
    assert caught.value.param == "amount"


async def test_a_refund_of_an_unpaid_intent_is_rejected(gateway: StripeGateway) -> None:
    intent = await _intent(gateway)

    with pytest.raises(ProviderRejected) as caught:
        await gateway.create_refund(
            payment_intent=intent.id, amount=100, idempotency_key="refund:1", metadata={}
        )

    assert caught.value.http_status == 400


async def test_a_retried_refund_refunds_once(
    gateway: StripeGateway, fake: FakeStripeServer
) -> None:
    intent = await _paid_intent(gateway, fake, 1000)

    first = await gateway.create_refund(
        payment_intent=intent.id, amount=400, idempotency_key="refund:1", metadata={}
    )
    again = await gateway.create_refund(
        payment_intent=intent.id, amount=400, idempotency_key="refund:1", metadata={}
    )

    assert again == first
    charge_id = fake.state.payment_intents[intent.id]["latest_charge"]
    assert len(fake.state.refunds) == 1
    assert fake.state.charges[charge_id]["amount_refunded"] == 400


# -- faults --------------------------------------------------------------------------


async def test_server_errors_become_provider_error_after_the_library_retries(
    gateway: StripeGateway, fake: FakeStripeServer
) -> None:
    fake.state.fail_next(3, status=500)

    with pytest.raises(ProviderError) as caught:
        await _intent(gateway, key="order:1:pi")

    assert caught.value.http_status == 500
    # One try and max_network_retries=2 retries, all under our key.
    assert fake.state.calls[CREATE] == 3
    assert {r.idempotency_key for r in fake.state.requests} == {"order:1:pi"}
    assert fake.state.payment_intents == {}


async def test_a_passing_server_error_is_retried_away(
    gateway: StripeGateway, fake: FakeStripeServer
) -> None:
    fake.state.fail_next(1, status=503)

    intent = await _intent(gateway)

    assert fake.state.calls[CREATE] == 2
    assert list(fake.state.payment_intents) == [intent.id]


@pytest.mark.parametrize("status", [409, 502, 503])
async def test_conflicts_and_gateway_errors_mean_retry_later(
    make_gateway: MakeGateway, fake: FakeStripeServer, status: int
) -> None:
    fake.state.fail_next(1, status=status)

    with pytest.raises(ProviderError) as caught:
        await _intent(make_gateway(max_network_retries=0))

    assert caught.value.http_status == status


async def test_the_library_obeys_stripe_should_retry_false(
    gateway: StripeGateway, fake: FakeStripeServer
) -> None:
    fake.state.fail_next(1, status=500, should_retry=False)

    with pytest.raises(ProviderError):
        await _intent(gateway)

    assert fake.state.calls[CREATE] == 1


async def test_a_rate_limit_is_provider_error_without_library_retries(
    gateway: StripeGateway, fake: FakeStripeServer
) -> None:
    fake.state.fail_next(1, status=429)

    with pytest.raises(ProviderError) as caught:
        await _intent(gateway)

    assert caught.value.http_status == 429
    # stripe-python retries 409 and 5xx, not 429 (unless Stripe-Should-Retry says so).
    assert fake.state.calls[CREATE] == 1


async def test_a_timeout_becomes_provider_error(
    make_gateway: MakeGateway, fake: FakeStripeServer
) -> None:
    gateway = make_gateway(timeout_seconds=0.5, max_network_retries=0)
    fake.state.timeout_next(1, seconds=2.0)

    with pytest.raises(ProviderError) as caught:
        await _intent(gateway)

    assert caught.value.http_status is None
    assert fake.state.payment_intents == {}


async def test_an_applied_create_whose_answer_was_lost_is_recovered_by_the_retry(
    make_gateway: MakeGateway, fake: FakeStripeServer
) -> None:
    gateway = make_gateway(timeout_seconds=0.5, max_network_retries=1)
    fake.state.timeout_next(1, seconds=2.0, applied=True)

    intent = await _intent(gateway, key="order:1:pi")

    assert list(fake.state.payment_intents) == [intent.id]
    assert [r.replayed for r in fake.state.requests] == [False, True]


async def test_an_unreachable_stripe_is_provider_error(make_gateway: MakeGateway) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    gateway = make_gateway(api_base=f"http://127.0.0.1:{closed_port}", max_network_retries=0)

    with pytest.raises(ProviderError):
        await _intent(gateway)


async def test_a_wrong_api_key_is_rejected(make_gateway: MakeGateway) -> None:
    gateway = make_gateway(api_key="sk_live_not_for_tests")

    with pytest.raises(ProviderRejected) as caught:
        await _intent(gateway)

    assert caught.value.http_status == 401


def _answering(body: bytes, paths: list[bytes]) -> Any:
    """A server answering every request 200 with `body`; it notes each raw path."""

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        paths.append(scope["raw_path"])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return answer


@pytest.mark.parametrize("body", [b"[]", b'"pi_1"', b"null"])
async def test_a_success_whose_body_is_no_json_object_is_provider_error(
    make_gateway: MakeGateway, body: bytes
) -> None:
    # A proxy or a broken deployment answering 200: the call may have happened, so
    # this is "find out later" with the same key, never a crash or a rejection.
    with serve_in_thread(_answering(body, []), name="stripe-odd-answer") as url:
        gateway = make_gateway(api_base=url, max_network_retries=0)
        with pytest.raises(ProviderError):
            await _intent(gateway)


async def test_an_id_goes_into_the_path_escaped(make_gateway: MakeGateway) -> None:
    # Unescaped, "pi_1/cancel" would name another endpoint.
    intent = {
        "id": "pi_1",
        "object": "payment_intent",
        "status": "canceled",
        "amount": 100,
        "currency": "cny",
        "client_secret": None,
        "metadata": {},
    }
    paths: list[bytes] = []
    with serve_in_thread(_answering(json.dumps(intent).encode(), paths), name="stripe") as url:
        gateway = make_gateway(api_base=url, max_network_retries=0)
        await gateway.retrieve_payment_intent("pi_1/cancel")

    assert paths == [b"/v1/payment_intents/pi_1%2Fcancel"]


# -- the fake's own HTTP contract ----------------------------------------------------


async def test_the_fake_marks_replays_and_wants_a_test_key(fake: FakeStripeServer) -> None:
    body = {"amount": "100", "currency": "cny"}
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "raw:1"}
    async with httpx.AsyncClient(base_url=fake.url) as client:
        first = await client.post("/v1/payment_intents", data=body, headers=headers)
        again = await client.post("/v1/payment_intents", data=body, headers=headers)
        anonymous = await client.post("/v1/payment_intents", data=body)

    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "invalid_request_error"


# -- webhooks ------------------------------------------------------------------------


def _event_body(**overrides: Any) -> dict[str, Any]:
    intent = {"id": "pi_123", "object": "payment_intent", "amount": 1000, "status": "succeeded"}
    return make_event("payment_intent.succeeded", intent, **overrides)


def test_a_correctly_signed_event_is_read(gateway: StripeGateway) -> None:
    created = int(time.time()) - 60
    payload, headers = webhook_delivery(_event_body(event_id="evt_1", created=created), SECRET)

    event = gateway.verify_event(payload, headers["Stripe-Signature"])

    assert isinstance(event, Event)
    assert (event.id, event.type, event.livemode) == ("evt_1", "payment_intent.succeeded", False)
    assert event.created == datetime.fromtimestamp(created, UTC)
    assert event.object_id == "pi_123"
    assert event.object["amount"] == 1000
    assert event.payload == json.loads(payload)


def test_either_signature_is_accepted_while_the_secret_rolls(make_gateway: MakeGateway) -> None:
    payload = json.dumps(_event_body()).encode()
    header = sign(payload, "whsec_old", also_signed_with=["whsec_new"])

    assert header.count("v1=") == 2
    for secret in ("whsec_old", "whsec_new"):
        assert make_gateway(webhook_secret=secret).verify_event(payload, header).type


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("t=1,v0=abc", id="no-v1"),
        pytest.param("garbage", id="unparsable"),
    ],
)
def test_an_event_without_a_usable_signature_is_refused(
    gateway: StripeGateway, signature: str | None
) -> None:
    with pytest.raises(InvalidSignature):
        gateway.verify_event(json.dumps(_event_body()).encode(), signature)


def test_an_event_signed_with_another_secret_is_refused(gateway: StripeGateway) -> None:
    payload = json.dumps(_event_body()).encode()

    with pytest.raises(InvalidSignature):
        gateway.verify_event(payload, sign(payload, "whsec_someone_else"))


def test_a_tampered_body_is_refused(gateway: StripeGateway) -> None:
    payload = json.dumps(_event_body()).encode()
    header = sign(payload, SECRET)

    with pytest.raises(InvalidSignature):
        gateway.verify_event(payload.replace(b"1000", b"9000"), header)


def test_a_signature_older_than_five_minutes_is_refused(gateway: StripeGateway) -> None:
    payload = json.dumps(_event_body()).encode()
    now = int(time.time())

    assert gateway.verify_event(payload, sign(payload, SECRET, now - 290)).id
    with pytest.raises(InvalidSignature, match="tolerance"):
        gateway.verify_event(payload, sign(payload, SECRET, now - 301))


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"{not json", id="garbage"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'{"id": "evt_1", "object": "event"}', id="no-data"),
        pytest.param(b'{"object": "v2.core.event", "id": "evt_1"}', id="thin-event"),
    ],
)
def test_a_signed_payload_that_is_not_an_event_is_refused(
    gateway: StripeGateway, payload: bytes
) -> None:
    with pytest.raises(InvalidSignature):
        gateway.verify_event(payload, sign(payload, SECRET))


def test_a_body_that_is_not_utf8_is_refused(gateway: StripeGateway) -> None:
    with pytest.raises(InvalidSignature):
        gateway.verify_event(b"\xff\xfe{}", f"t={int(time.time())},v1=00")


async def test_events_the_fake_emits_verify(gateway: StripeGateway, fake: FakeStripeServer) -> None:
    intent = await _paid_intent(gateway, fake, 500)
    [succeeded] = [e for e in fake.state.events if e["type"] == "payment_intent.succeeded"]

    payload, headers = webhook_delivery(succeeded, SECRET)
    event = gateway.verify_event(payload, headers["Stripe-Signature"])

    assert event.object_id == intent.id
    assert event.object["status"] == "succeeded"
