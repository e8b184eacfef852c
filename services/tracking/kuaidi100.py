"""Kuaidi100 at the edge: its subscription pushes and its real-time query, in our vocabulary.

Kuaidi100 covers the domestic Chinese carriers directly. Its pushes are signed
form posts carrying a parcel's whole history newest first, in Beijing time; this
module turns them into UTC checkpoints, oldest first, like every other provider's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs

import httpx

from services import phones
from services.tracking.carriers import by_kuaidi100_code, clean_tracking_number, get_carrier
from services.tracking.vocabulary import (
    Checkpoint,
    InvalidSignature,
    MalformedPush,
    ProviderUnavailable,
    RateLimited,
    TrackingNotFound,
    TrackingStatus,
    TrackingUpdate,
)

logger = logging.getLogger(__name__)

# Kuaidi100 writes times as Beijing wall-clock time with no offset; China has no DST.
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
RAW_PREFIX = "kuaidi100:"
DEFAULT_RETRY_AFTER = timedelta(seconds=60)

# Kuaidi100's state codes (`lastResult.state`, and each item's `statusCode` when
# asked for with resultv2) in our terms. The one- and two-digit codes are the base
# states; three- and four-digit ones are their "advanced" refinements, the family
# being the leading digit (100x: the 0 family, in transit).
STATE_CODES: dict[str, TrackingStatus] = {
    "0": TrackingStatus.in_transit,  # 在途
    "1001": TrackingStatus.in_transit,  # 到达派件城市, arrived in the delivery city
    "1002": TrackingStatus.in_transit,  # 干线, trunk line
    "1003": TrackingStatus.in_transit,  # 转递, forwarded to a new address
    "1": TrackingStatus.info_received,  # 揽收: the courier has it, nothing scanned on the way
    "101": TrackingStatus.info_received,  # 已下单, waybill made
    "102": TrackingStatus.info_received,  # 待揽收, waiting for pickup
    "103": TrackingStatus.info_received,  # 已揽收, picked up
    "2": TrackingStatus.exception,  # 疑难; 201-210: not signed for, no news, damaged, ...
    "3": TrackingStatus.delivered,  # 签收; 301-304: by the addressee, by a neighbour, ...
    "4": TrackingStatus.returned,  # 退签, signed for back at the sender
    # 已销单: the waybill was cancelled. Nothing travelled, so it is not a return;
    # someone has to find out why, which is what an exception is for.
    "401": TrackingStatus.exception,
    "5": TrackingStatus.out_for_delivery,  # 派件
    "501": TrackingStatus.available_for_pickup,  # 投柜或驿站: in a locker or at a station
    "6": TrackingStatus.returned,  # 退回, on its way back to the sender
    "7": TrackingStatus.in_transit,  # 转投, handed to another carrier
    "8": TrackingStatus.in_transit,  # 清关, customs
    "10": TrackingStatus.in_transit,  # 待清关, waiting for customs
    "11": TrackingStatus.in_transit,  # 清关中, in customs
    "12": TrackingStatus.in_transit,  # 已清关, cleared
    "13": TrackingStatus.exception,  # 清关异常, customs trouble
    "14": TrackingStatus.returned,  # 拒签, refused by the addressee (and so going back)
}

# The Chinese names Kuaidi100 puts in each item's `status`, for items that carry
# no `statusCode`; mapped to the code they name, so the raw status stays the same
# whichever of the two a push happened to carry.
STATE_NAMES: dict[str, str] = {
    "在途": "0",
    "到达派件城市": "1001",
    "干线": "1002",
    "转递": "1003",
    "揽收": "1",
    "已下单": "101",
    "待揽收": "102",
    "已揽收": "103",
    "疑难": "2",
    "签收": "3",
    "本人签收": "301",
    "派件异常后签收": "302",
    "代签": "303",
    "投柜或站签收": "304",
    "退签": "4",
    "已销单": "401",
    "派件": "5",
    "投柜或驿站": "501",
    "退回": "6",
    "转投": "7",
    "清关": "8",
    "待清关": "10",
    "清关中": "11",
    "已清关": "12",
    "清关异常": "13",
    "拒签": "14",
}


def status_of_code(code: str) -> TrackingStatus | None:
    """Our status for a Kuaidi100 state code, known or of a known family; else None."""
    if code in STATE_CODES:
        return STATE_CODES[code]
    if len(code) == 4 and code.startswith("100"):
        return STATE_CODES["0"]
    if len(code) == 3 and code.isdigit():
        return STATE_CODES.get(code[0])
    return None


@dataclass(frozen=True)
class Kuaidi100Config:
    customer: str | None
    key: str | None = field(repr=False)  # secrets stay out of logs and tracebacks
    salt: str | None = field(repr=False)
    api_base: str = "https://poll.kuaidi100.com"
    timeout_seconds: float = 10.0


class Kuaidi100:
    """The Kuaidi100 tracking provider (see `vocabulary.Provider`)."""

    name = "kuaidi100"

    def __init__(self, config: Kuaidi100Config) -> None:
        self.config = config

    @property
    def can_push(self) -> bool:
        return bool(self.config.salt)

    @property
    def can_poll(self) -> bool:
        return bool(self.config.customer and self.config.key)

    # -- pushes ------------------------------------------------------------------

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        salt = self.config.salt
        if not salt:
            raise InvalidSignature("Kuaidi100 pushes are not configured (no salt)")
        try:
            form = _form(body)
        except MalformedPush as exc:
            raise InvalidSignature(str(exc)) from exc
        param, sign = form.get("param"), form.get("sign")
        if param is None or not sign:
            raise InvalidSignature("Kuaidi100 push without param and sign")
        # Kuaidi100 sends the hex digest upper-case; compare case-blind all the same.
        expected = sign_md5(param + salt).encode()
        if not hmac.compare_digest(expected, sign.strip().upper().encode()):
            raise InvalidSignature("Kuaidi100 sign does not match the param")

    def parse_push(self, body: bytes, headers: Mapping[str, str]) -> list[TrackingUpdate]:
        param = _json_object(_form(body).get("param"), "param")
        status = param.get("status")
        result = param.get("lastResult")
        if result is None and status in ("abort", "shutdown"):
            # Kuaidi100 gave up on a parcel it never found: there is nothing to record.
            return []
        # "abort" (given up) and "updateall" (history rewritten) carry the history
        # like "polling" does; "shutdown" says tracking ended.
        return [
            tracking_update(
                result,
                finished=status == "shutdown",
                extra={"status": status, "message": param.get("message")},
            )
        ]

    def acknowledgement(self) -> dict[str, object]:
        # Anything else and Kuaidi100 keeps re-sending the push.
        return {"result": True, "returnCode": "200", "message": "成功"}

    # -- polling -----------------------------------------------------------------

    async def poll(
        self,
        client: httpx.AsyncClient,
        carrier: str,
        tracking_number: str,
        *,
        phone: str | None = None,
    ) -> TrackingUpdate:
        customer, key = self.config.customer, self.config.key
        if not customer or not key:
            raise ProviderUnavailable("Kuaidi100 polling is not configured (no customer or key)")
        known = get_carrier(carrier)
        code = known.kuaidi100_code
        # resultv2=1 asks for each item's own status, not only the parcel's latest.
        query = {"com": code, "num": tracking_number, "resultv2": "1"}
        # Only where the carrier asks, and only the last four digits, which it accepts.
        tail = phone_tail(phone) if known.query_needs_phone else None
        if tail is not None:
            query["phone"] = tail
        param = json.dumps(
            query,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        try:
            response = await client.post(
                f"{self.config.api_base}/poll/query.do",
                data={
                    "customer": customer,
                    "param": param,
                    "sign": sign_md5(param + key + customer),
                },
                timeout=httpx.Timeout(self.config.timeout_seconds),
            )
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(f"Kuaidi100 did not answer in time: {exc!r}") from exc
        except httpx.RequestError as exc:
            raise ProviderUnavailable(f"Kuaidi100 could not be reached: {exc!r}") from exc

        if response.status_code == 429:
            raise RateLimited(_retry_after(response.headers))
        if response.status_code != 200:
            raise ProviderUnavailable(f"Kuaidi100 answered {response.status_code}")
        try:
            answer = _json_object(response.text, "answer")
        except MalformedPush as exc:
            logger.error("unreadable Kuaidi100 answer", extra={"error": str(exc)})
            raise ProviderUnavailable(str(exc)) from exc
        _raise_for_error(answer, code, tracking_number)
        try:
            return tracking_update(answer)
        except MalformedPush as exc:
            logger.error("unreadable Kuaidi100 answer", extra={"error": str(exc)})
            raise ProviderUnavailable(f"unreadable Kuaidi100 answer: {exc}") from exc


def phone_tail(phone: str | None) -> str | None:
    """The last four digits of a phone (full width folded), or None without four digits."""
    numbers = phones.digits(phone)
    return numbers[-4:] if len(numbers) >= 4 else None


def _raise_for_error(answer: Mapping[str, Any], code: str, number: str) -> None:
    """Kuaidi100 answers errors with HTTP 200 and `result: false`; sort them out.

    500 "查询无结果" is its "not found (yet)"; 501 and 502 are its own trouble and
    pass. The rest (400 bad company or request, 503 bad sign, 601 account out of
    credit or expired) need a person, so they are logged as errors; the parcel is
    retried later all the same, when somebody may have fixed the account.
    Kuaidi100 documents no rate-limit code: an HTTP 429 is the only RateLimited.
    """
    return_code = str(answer.get("returnCode", ""))
    if answer.get("result") is not False and return_code in ("", "200"):
        return
    message = str(answer.get("message", ""))
    if return_code == "500":
        raise TrackingNotFound(f"Kuaidi100 has nothing for {code} {number}: {message}")
    if return_code not in ("501", "502"):
        logger.error(
            "Kuaidi100 refused a query", extra={"return_code": return_code, "answer": message}
        )
    raise ProviderUnavailable(f"Kuaidi100 answered {return_code}: {message}")


def tracking_update(
    result: object,
    *,
    finished: bool = False,
    extra: Mapping[str, object] | None = None,
) -> TrackingUpdate:
    """A TrackingUpdate from a Kuaidi100 result (a push's `lastResult`, or a query answer).

    Kuaidi100 pushes have no id of their own (delivery_id None): each push repeats
    the whole history, and the service dedupes the checkpoints.
    """
    if not isinstance(result, dict):
        raise MalformedPush("Kuaidi100 result is not an object")
    com, number = _required(result, "com"), _required(result, "nu")
    carrier = by_kuaidi100_code(com)
    if carrier is None:
        raise MalformedPush(f"Kuaidi100 company {com!r} is not one of our carriers")
    items = result.get("data") or []
    if not isinstance(items, list):
        raise MalformedPush("Kuaidi100 data is not a list")
    state = _text(result, "state")
    # Only the newest item (the first) may borrow the parcel's state: it is the one
    # the state describes.
    checkpoints = [
        _checkpoint(item, state if index == 0 else None) for index, item in enumerate(items)
    ]
    details = {"state": state, "ischeck": _text(result, "ischeck"), **(extra or {})}
    return TrackingUpdate(
        provider=Kuaidi100.name,
        carrier=carrier.code,
        tracking_number=clean_tracking_number(number),
        checkpoints=tuple(sorted(checkpoints, key=lambda c: c.occurred_at)),
        finished=finished,
        extra={key: value for key, value in details.items() if isinstance(value, str) and value},
    )


def _checkpoint(item: object, parcel_state: str | None) -> Checkpoint:
    if not isinstance(item, dict):
        raise MalformedPush("Kuaidi100 item is not an object")
    status, raw = _item_status(_text(item, "statusCode"), _text(item, "status"), parcel_state)
    when = _text(item, "time") or _required(item, "ftime")
    return Checkpoint(
        status=status,
        raw_status=raw,
        occurred_at=parse_time(when),
        location=_text(item, "areaName"),
        description=_text(item, "context"),
    )


def _item_status(
    code: str | None, name: str | None, parcel_state: str | None
) -> tuple[TrackingStatus, str]:
    """Status and raw status of one item: its code, else its name, else the parcel's state."""
    if code is not None and (status := status_of_code(code)) is not None:
        return status, RAW_PREFIX + code
    if name is not None:
        named = STATE_NAMES.get(name)
        if named is not None:
            return STATE_CODES[named], RAW_PREFIX + named
    if parcel_state is not None and (status := status_of_code(parcel_state)) is not None:
        return status, RAW_PREFIX + parcel_state
    if code is not None or name is not None:
        # A code or name Kuaidi100 added since this table was written. Refuse, rather
        # than risk filing a return or a delivery as something else.
        raise MalformedPush(f"unknown Kuaidi100 status {code or name!r}")
    # A plain query (no resultv2) leaves older items without any status. Every
    # scan between the pickup and the latest one is a parcel on its way.
    return TrackingStatus.in_transit, RAW_PREFIX + "?"


def parse_time(text: str) -> datetime:
    """A Kuaidi100 time ("2026-11-20 16:33:19", Beijing time) in UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise MalformedPush(f"unreadable Kuaidi100 time {text!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=BEIJING)
    return parsed.astimezone(UTC)


def sign_md5(text: str) -> str:
    """Kuaidi100's signature: the upper-case hex MD5 of the UTF-8 text."""
    # MD5 is Kuaidi100's choice, not ours; it only authenticates a shared secret.
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest().upper()


def _form(body: bytes) -> dict[str, str]:
    try:
        fields = parse_qs(
            body.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError as exc:
        raise MalformedPush("Kuaidi100 push is not UTF-8") from exc
    # A field sent twice is a forged or broken push, not a choice of values.
    if any(len(values) != 1 for values in fields.values()):
        raise MalformedPush("Kuaidi100 push repeats a form field")
    return {name: values[0] for name, values in fields.items()}


def _json_object(text: str | None, what: str) -> dict[str, Any]:
    if text is None:
        raise MalformedPush(f"Kuaidi100 {what} is missing")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedPush(f"Kuaidi100 {what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise MalformedPush(f"Kuaidi100 {what} is not a JSON object")
    return value


def _text(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # codes are strings on the wire, but be lenient
    if value is not None and not isinstance(value, str):
        raise MalformedPush(f"Kuaidi100 field {key!r} is not text")
    return value.strip() or None if value is not None else None


def _required(item: Mapping[str, Any], key: str) -> str:
    value = _text(item, key)
    if value is None:
        raise MalformedPush(f"Kuaidi100 field {key!r} is missing")
    return value


def _retry_after(headers: Mapping[str, str]) -> timedelta:
    try:
        return timedelta(seconds=max(1, int(headers.get("retry-after", ""))))
    except ValueError:
        return DEFAULT_RETRY_AFTER
