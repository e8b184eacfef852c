"""Carrier numbers and the AfterShip and Kuaidi100 adapters: no database needed.

Pushes are built by tests/fakes/tracking_pushes the way the providers sign them;
polling runs over real HTTP against the fake tracking server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers

from services.errors import Invalid
from services.tracking import carriers
from services.tracking.aftership import AfterShip, AfterShipConfig, retry_after
from services.tracking.carriers import (
    by_aftership_slug,
    by_kuaidi100_code,
    get_carrier,
    normalise_tracking_number,
    s10_check_digit,
)
from services.tracking.kuaidi100 import (
    STATE_CODES,
    Kuaidi100,
    Kuaidi100Config,
    sign_md5,
    status_of_code,
)
from services.tracking.vocabulary import (
    InvalidSignature,
    MalformedPush,
    Provider,
    ProviderUnavailable,
    RateLimited,
    TrackingNotFound,
    TrackingStatus,
)
from tests.fakes.tracking_pushes import (
    aftership_push,
    kuaidi100_form,
    kuaidi100_push,
    signed_aftership_headers,
)
from tests.fakes.tracking_server import (
    AFTERSHIP_API_KEY,
    AFTERSHIP_TRACKINGS,
    KUAIDI100_CUSTOMER,
    KUAIDI100_KEY,
    KUAIDI100_QUERY,
    FakeTrackingServer,
    serve_fake_tracking,
)

SECRET = "aftership-webhook-secret"
SALT = "kuaidi100-salt"
YTO = "YT1234567890123"
SF = "SF1234567890123"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def aftership(**changes: Any) -> AfterShip:
    """An adapter with working credentials, but for `changes` to its config."""
    config = AfterShipConfig(api_key=AFTERSHIP_API_KEY, webhook_secret=SECRET)
    return AfterShip(replace(config, **changes))


def kuaidi100(**changes: Any) -> Kuaidi100:
    config = Kuaidi100Config(customer=KUAIDI100_CUSTOMER, key=KUAIDI100_KEY, salt=SALT)
    return Kuaidi100(replace(config, **changes))


def test_both_adapters_are_providers() -> None:
    providers: list[Provider] = [aftership(), kuaidi100()]  # checked by mypy
    assert [p.name for p in providers] == ["aftership", "kuaidi100"]
    assert not aftership(webhook_secret=None).can_push and not aftership(api_key=None).can_poll
    assert not kuaidi100(salt=None).can_push and not kuaidi100(key=None).can_poll


# -- carriers ----------------------------------------------------------------------


def test_s10_number_with_the_right_check_digit_is_cleaned_and_accepted() -> None:
    assert normalise_tracking_number("ems", " ra 4731-2482 9gb ") == "RA473124829GB"
    assert normalise_tracking_number("chinapost", "RR123456785CN") == "RR123456785CN"


def test_s10_number_with_a_wrong_check_digit_is_refused() -> None:
    with pytest.raises(Invalid) as caught:
        normalise_tracking_number("ems", "RA473124828GB")
    assert caught.value.field == "tracking_number"
    assert caught.value.extra["reason"] == "invalid-tracking-number"


def test_s10_check_digit_maps_ten_to_zero_and_eleven_to_five() -> None:
    assert s10_check_digit("47312482") == 9
    assert s10_check_digit("10000014") == 0  # 11 - 1 = 10
    assert s10_check_digit("10000002") == 5  # 11 - 0 = 11


def test_postal_carriers_accept_domestic_thirteen_digit_numbers_only() -> None:
    assert normalise_tracking_number("chinapost", "9876543210123") == "9876543210123"
    with pytest.raises(Invalid):
        normalise_tracking_number("ems", "987654321012")


@pytest.mark.parametrize("number", ["SF1234567890123", "sf123456789012", "123456789012"])
def test_sf_accepts_its_current_and_older_formats(number: str) -> None:
    assert normalise_tracking_number("sf", number) == number.upper()


@pytest.mark.parametrize("number", ["SF12345678901", "1234567890123", "YT1234567890123"])
def test_sf_refuses_what_cannot_be_an_sf_number(number: str) -> None:
    with pytest.raises(Invalid):
        normalise_tracking_number("sf", number)


def test_full_width_input_is_the_same_number() -> None:
    assert normalise_tracking_number("sf", "ＳＦ１２３４　５６７８　９０１２３") == SF


def test_yto_prefix_needs_its_thirteen_to_fifteen_digits() -> None:
    assert normalise_tracking_number("yto", YTO) == YTO
    with pytest.raises(Invalid):
        normalise_tracking_number("yto", "YT123456789012")


@pytest.mark.parametrize("number", ["AB#1234567", "12345", "7" * 41])
def test_numbers_outside_letters_and_digits_or_length_are_refused(number: str) -> None:
    with pytest.raises(Invalid):
        normalise_tracking_number("zto", number)


def test_unknown_carrier_is_an_invalid_carrier_field() -> None:
    with pytest.raises(Invalid) as caught:
        get_carrier("dhl")
    assert caught.value.field == "carrier"
    assert caught.value.extra["reason"] == "unknown-carrier"


def test_every_carrier_is_found_by_its_provider_codes() -> None:
    for carrier in carriers.CARRIERS.values():
        assert by_aftership_slug(carrier.aftership_slug) is carrier
        assert by_kuaidi100_code(carrier.kuaidi100_code) is carrier
    assert by_aftership_slug("dhl") is None and by_kuaidi100_code("dhl") is None


# -- AfterShip pushes --------------------------------------------------------------


def test_aftership_signature_verifies_whatever_the_header_case() -> None:
    body, headers = aftership_push(SECRET, carrier="sf", number=SF, checkpoints=[])
    aftership().verify(body, {"Aftership-Hmac-SHA256": headers["aftership-hmac-sha256"]})
    aftership().verify(body, Headers(headers=headers))


def test_aftership_signature_over_another_body_is_refused() -> None:
    body, headers = aftership_push(SECRET, carrier="sf", number=SF, checkpoints=[])
    with pytest.raises(InvalidSignature):
        aftership().verify(body + b" ", headers)
    with pytest.raises(InvalidSignature):
        aftership().verify(body, signed_aftership_headers("another secret", body))


def test_aftership_push_without_signature_or_secret_is_refused() -> None:
    body, headers = aftership_push(SECRET, carrier="sf", number=SF, checkpoints=[])
    with pytest.raises(InvalidSignature):
        aftership().verify(body, {"content-type": "application/json"})
    with pytest.raises(InvalidSignature):
        aftership(webhook_secret=None).verify(body, headers)


def test_aftership_push_reads_as_utc_checkpoints_and_a_return() -> None:
    body, headers = aftership_push(
        SECRET,
        carrier="sf",
        number="sf1234567890123",
        event_id="evt-1",
        checkpoints=[
            ("InfoReceived_001", "2026-11-20T09:00:00+08:00", "Shenzhen"),
            ("InTransit", "2026-11-20T23:30:00+08:00", None),
            ("Exception_011", "2026-11-23T02:00:00", "Guangzhou"),  # no offset: UTC
        ],
    )
    [update] = aftership().parse_push(body, headers)
    assert (update.provider, update.carrier, update.tracking_number) == ("aftership", "sf", SF)
    assert update.delivery_id == "evt-1"
    first, second, third = update.checkpoints
    assert (first.status, first.raw_status) == (TrackingStatus.info_received, "InfoReceived_001")
    assert first.occurred_at == datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    assert first.location == "Shenzhen"
    assert (second.status, second.raw_status) == (TrackingStatus.in_transit, "InTransit")
    assert second.occurred_at == datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
    assert second.location == "CHN"  # from city, state and country when location is empty
    assert (third.status, third.raw_status) == (TrackingStatus.returned, "Exception_011")
    assert third.occurred_at == datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def test_aftership_subtag_new_to_us_falls_back_to_its_tag() -> None:
    body, headers = aftership_push(
        SECRET,
        carrier="jd",
        number="JDVA12345678901",
        checkpoints=[("Delivered_099", "2026-11-20T09:00:00Z", None)],
    )
    [update] = aftership().parse_push(body, headers)
    assert update.checkpoints[0].status is TrackingStatus.delivered


def test_aftership_tracking_without_checkpoints_yields_none() -> None:
    body, headers = aftership_push(SECRET, carrier="sf", number=SF, checkpoints=[])
    [update] = aftership().parse_push(body, headers)
    assert update.checkpoints == ()


def test_aftership_events_other_than_tracking_updates_are_ignored() -> None:
    body, headers = aftership_push(
        SECRET, carrier="sf", number=SF, checkpoints=[], event="edd_revise"
    )
    assert aftership().parse_push(body, headers) == []


@pytest.mark.parametrize(
    ("carrier_slug", "tag", "body"),
    [
        ("dhl", "InTransit_001", None),  # not one of our carriers
        ("sf-express", "Teleported", None),  # a tag AfterShip does not have
        ("sf-express", "InTransit_001", b"not json"),
    ],
)
def test_aftership_push_we_cannot_read_is_malformed(
    carrier_slug: str, tag: str, body: bytes | None
) -> None:
    pushed, headers = aftership_push(
        SECRET, carrier="sf", number=SF, checkpoints=[(tag, "2026-11-20T09:00:00Z", None)]
    )
    pushed = pushed.replace(b'"sf-express"', f'"{carrier_slug}"'.encode())
    with pytest.raises(MalformedPush):
        aftership().parse_push(body or pushed, headers)


# -- Kuaidi100 pushes --------------------------------------------------------------

HISTORY = [  # newest first, as Kuaidi100 sends it
    ("3", "2026-11-21 10:05:00", "上海市,浦东新区"),
    ("5", "2026-11-21 07:30:00", "上海市"),
    ("0", "2026-11-20 16:33:19", "江苏省,苏州市"),
    ("1", "2026-11-20 06:10:00", "浙江省,杭州市"),
]


def test_kuaidi100_sign_verifies_in_either_case() -> None:
    body, headers = kuaidi100_push(SALT, carrier="yto", number=YTO, items=HISTORY)
    kuaidi100().verify(body, headers)
    param = '{"status":"polling"}'
    kuaidi100().verify(*kuaidi100_form(SALT, param, sign=sign_md5(param + SALT).lower()))


def test_kuaidi100_push_with_a_wrong_or_missing_sign_is_refused() -> None:
    with pytest.raises(InvalidSignature):
        kuaidi100().verify(
            *kuaidi100_push("another salt", carrier="yto", number=YTO, items=HISTORY)
        )
    with pytest.raises(InvalidSignature):
        kuaidi100().verify(*kuaidi100_form(SALT, '{"status":"polling"}', sign=""))
    with pytest.raises(InvalidSignature):
        kuaidi100().verify(b"param=%7B%7D", {})
    with pytest.raises(InvalidSignature):
        kuaidi100(salt=None).verify(*kuaidi100_push(SALT, carrier="yto", number=YTO, items=HISTORY))


def test_kuaidi100_history_newest_first_reads_oldest_first_in_utc() -> None:
    body, headers = kuaidi100_push(SALT, carrier="yto", number=YTO, items=HISTORY)
    [update] = kuaidi100().parse_push(body, headers)
    assert (update.provider, update.carrier, update.tracking_number) == ("kuaidi100", "yto", YTO)
    assert update.delivery_id is None and not update.finished
    assert [c.status for c in update.checkpoints] == [
        TrackingStatus.info_received,
        TrackingStatus.in_transit,
        TrackingStatus.out_for_delivery,
        TrackingStatus.delivered,
    ]
    assert [c.raw_status for c in update.checkpoints] == [
        "kuaidi100:1",
        "kuaidi100:0",
        "kuaidi100:5",
        "kuaidi100:3",
    ]
    # 16:33:19 in Beijing (UTC+8) is 08:33:19 UTC.
    assert update.checkpoints[1].occurred_at == datetime(2026, 11, 20, 8, 33, 19, tzinfo=UTC)
    assert update.checkpoints[1].location == "江苏省,苏州市"
    assert update.checkpoints[0].occurred_at == datetime(2026, 11, 19, 22, 10, tzinfo=UTC)


def test_kuaidi100_item_named_in_chinese_reads_like_its_code() -> None:
    items = [("退回", "2026-11-22 09:00:00", None), ("投柜或驿站", "2026-11-21 09:00:00", None)]
    [update] = kuaidi100().parse_push(
        *kuaidi100_push(SALT, carrier="zto", number="75123456789012", items=items)
    )
    assert [(c.status, c.raw_status) for c in update.checkpoints] == [
        (TrackingStatus.available_for_pickup, "kuaidi100:501"),
        (TrackingStatus.returned, "kuaidi100:6"),
    ]


def test_kuaidi100_newest_item_without_a_status_takes_the_parcels_state() -> None:
    body, headers = kuaidi100_push(
        SALT,
        carrier="yto",
        number=YTO,
        items=[("", "2026-11-22 09:00:00", None), ("", "2026-11-21 09:00:00", None)],
        state="14",
    )
    [update] = kuaidi100().parse_push(body, headers)
    older, newest = update.checkpoints
    assert (newest.status, newest.raw_status) == (TrackingStatus.returned, "kuaidi100:14")
    assert older.status is TrackingStatus.in_transit


@pytest.mark.parametrize(("code", "status"), sorted(STATE_CODES.items()))
def test_kuaidi100_state_codes_map_as_the_table_says(code: str, status: TrackingStatus) -> None:
    assert status_of_code(code) is status


def test_kuaidi100_state_codes_cover_the_documented_states() -> None:
    base = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "10", "11", "12", "13", "14"}
    assert base <= STATE_CODES.keys()
    assert status_of_code("305") is TrackingStatus.delivered  # a new refinement of 3
    assert status_of_code("1004") is TrackingStatus.in_transit
    assert status_of_code("99") is None


def test_kuaidi100_shutdown_means_finished() -> None:
    body, headers = kuaidi100_push(
        SALT, carrier="yto", number=YTO, items=HISTORY, status="shutdown"
    )
    [update] = kuaidi100().parse_push(body, headers)
    assert update.finished and update.extra["status"] == "shutdown"


def test_kuaidi100_abort_keeps_what_it_carries() -> None:
    body, headers = kuaidi100_push(
        SALT, carrier="yto", number=YTO, items=HISTORY[2:], status="abort"
    )
    [update] = kuaidi100().parse_push(body, headers)
    assert len(update.checkpoints) == 2 and not update.finished
    assert (
        kuaidi100().parse_push(*kuaidi100_form(SALT, '{"status":"abort","message":"3天无记录"}'))
        == []
    )


def test_kuaidi100_push_for_a_company_we_do_not_use_is_malformed() -> None:
    body, headers = kuaidi100_push(SALT, carrier="yto", number=YTO, items=HISTORY)
    forged = body.replace(b"yuantong", b"debangwuliu")
    with pytest.raises(MalformedPush):
        kuaidi100().parse_push(forged, headers)


def test_kuaidi100_acknowledgement_is_what_it_expects() -> None:
    assert kuaidi100().acknowledgement() == {"result": True, "returnCode": "200", "message": "成功"}


# -- polling against the fake providers --------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTrackingServer]:
    with serve_fake_tracking() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_fake(request: pytest.FixtureRequest) -> None:
    # Only tests that use the server pay for it.
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").state.reset()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def polling(fake: FakeTrackingServer, provider: str, timeout: float = 5.0) -> Provider:
    if provider == "aftership":
        return aftership(api_base=fake.aftership_base, timeout_seconds=timeout)
    return kuaidi100(api_base=fake.kuaidi100_base, timeout_seconds=timeout)


PROVIDERS = pytest.mark.parametrize("provider", ["aftership", "kuaidi100"])


@PROVIDERS
async def test_poll_reads_the_parcels_scans(
    fake: FakeTrackingServer, client: httpx.AsyncClient, provider: str
) -> None:
    fake.state.set_parcel(
        "yto",
        YTO,
        (TrackingStatus.delivered, "2026-11-21T02:05:00Z", "上海市"),
        (TrackingStatus.in_transit, "2026-11-20T08:33:19Z", "苏州市"),
    )
    update = await polling(fake, provider).poll(client, "yto", YTO)
    assert (update.provider, update.carrier, update.tracking_number) == (provider, "yto", YTO)
    assert [(c.status, c.occurred_at, c.location) for c in update.checkpoints] == [
        (TrackingStatus.in_transit, utc("2026-11-20T08:33:19Z"), "苏州市"),
        (TrackingStatus.delivered, utc("2026-11-21T02:05:00Z"), "上海市"),
    ]
    [request] = fake.state.requests
    assert request.status == 200
    if provider == "aftership":
        assert request.params == {"tracking_numbers": YTO, "slug": "yto"}
        assert request.credential == AFTERSHIP_API_KEY
    else:
        assert (
            request.credential == KUAIDI100_CUSTOMER
            and '"com":"yuantong"' in request.params["param"]
        )


@PROVIDERS
async def test_poll_of_an_unknown_parcel_is_not_found(
    fake: FakeTrackingServer, client: httpx.AsyncClient, provider: str
) -> None:
    with pytest.raises(TrackingNotFound):
        await polling(fake, provider).poll(client, "sf", SF, phone="13800001111")


async def test_kuaidi100_refuses_an_sf_query_without_a_phone(
    fake: FakeTrackingServer, client: httpx.AsyncClient
) -> None:
    fake.state.set_parcel("sf", SF, (TrackingStatus.in_transit, "2026-11-20T08:00:00Z"))
    with pytest.raises(ProviderUnavailable, match="408"):
        await polling(fake, "kuaidi100").poll(client, "sf", SF)


@PROVIDERS
async def test_poll_rate_limited_waits_as_long_as_retry_after_says(
    fake: FakeTrackingServer, client: httpx.AsyncClient, provider: str
) -> None:
    fake.state.rate_limit_next(1, retry_after=42)
    with pytest.raises(RateLimited) as caught:
        await polling(fake, provider).poll(client, "yto", YTO)
    assert caught.value.retry_after == timedelta(seconds=42)


async def test_aftership_rate_limit_without_retry_after_uses_the_reset_time(
    fake: FakeTrackingServer, client: httpx.AsyncClient
) -> None:
    fake.state.rate_limit_next(1, retry_after=None, reset_in=120)
    with pytest.raises(RateLimited) as caught:
        await polling(fake, "aftership").poll(client, "yto", YTO)
    assert timedelta(seconds=115) <= caught.value.retry_after <= timedelta(seconds=121)


def test_rate_limit_saying_nothing_waits_a_minute() -> None:
    assert retry_after({}, now=0) == timedelta(seconds=60)
    assert retry_after({"X-RateLimit-Reset": "100"}, now=1000) == timedelta(seconds=1)


@PROVIDERS
async def test_poll_answered_500_is_unavailable(
    fake: FakeTrackingServer, client: httpx.AsyncClient, provider: str
) -> None:
    fake.state.fail_next(1, status=500)
    with pytest.raises(ProviderUnavailable):
        await polling(fake, provider).poll(client, "yto", YTO)


@PROVIDERS
async def test_poll_that_takes_too_long_is_unavailable(
    fake: FakeTrackingServer, client: httpx.AsyncClient, provider: str
) -> None:
    fake.state.set_parcel("yto", YTO, (TrackingStatus.in_transit, "2026-11-20T08:00:00Z"))
    fake.state.timeout_next(1, seconds=1.0)
    with pytest.raises(ProviderUnavailable):
        await polling(fake, provider, timeout=0.3).poll(client, "yto", YTO)
    assert fake.state.requests[0].fault == "timeout"


@PROVIDERS
async def test_poll_with_wrong_credentials_is_unavailable(
    fake: FakeTrackingServer, client: httpx.AsyncClient, provider: str
) -> None:
    fake.state.set_parcel("yto", YTO, (TrackingStatus.in_transit, "2026-11-20T08:00:00Z"))
    adapter = (
        aftership(api_base=fake.aftership_base, api_key="wrong")
        if provider == "aftership"
        else kuaidi100(api_base=fake.kuaidi100_base, key="wrong")
    )
    with pytest.raises(ProviderUnavailable):
        await adapter.poll(client, "yto", YTO)
    endpoint = AFTERSHIP_TRACKINGS if provider == "aftership" else KUAIDI100_QUERY
    assert fake.state.calls[endpoint] == 1


async def test_poll_of_an_unreachable_provider_is_unavailable(client: httpx.AsyncClient) -> None:
    adapter = aftership(api_base="http://127.0.0.1:9", timeout_seconds=0.5)
    with pytest.raises(ProviderUnavailable):
        await adapter.poll(client, "yto", YTO)
