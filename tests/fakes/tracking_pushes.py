"""Signed webhook deliveries shaped like AfterShip's and Kuaidi100's, and their payloads.

The fake tracking server builds its answers with the same functions, so a push
and a poll for one parcel look alike, as they do for real:

    body, headers = aftership_push(SECRET, carrier="sf", number="SF1234567890123",
                                   checkpoints=[("InTransit_007", "2026-11-20T08:00:00+08:00",
                                                 "Shenzhen")])
    body, headers = kuaidi100_push(SALT, carrier="yto", number="YT1234567890123",
                                   items=[("3", "2026-11-21 10:00:00", "上海市"), ...])
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from services.tracking.carriers import get_carrier
from services.tracking.kuaidi100 import BEIJING, STATE_NAMES, sign_md5
from services.tracking.vocabulary import TrackingStatus

# (tag or subtag, ISO 8601 time, location or None); "InTransit_007" carries its tag.
AfterShipScan = tuple[str, str, str | None]
# (Kuaidi100 code like "0" / "501", or a Chinese name like "在途";
#  "YYYY-MM-DD HH:MM:SS" Beijing time; areaName or None). Newest first.
Kuaidi100Item = tuple[str, str, str | None]

# How the fake providers say each of our statuses. Kuaidi100 has no word for a
# failed attempt, a pending parcel or an expired one: those come back as the
# nearest thing it does say (exception, info received, exception).
AFTERSHIP_SUBTAGS: dict[TrackingStatus, str] = {
    TrackingStatus.pending: "Pending_001",
    TrackingStatus.info_received: "InfoReceived_001",
    TrackingStatus.in_transit: "InTransit_007",
    TrackingStatus.out_for_delivery: "OutForDelivery_001",
    TrackingStatus.available_for_pickup: "AvailableForPickup_001",
    TrackingStatus.delivered: "Delivered_001",
    TrackingStatus.failed_attempt: "AttemptFail_001",
    TrackingStatus.exception: "Exception_001",
    TrackingStatus.returned: "Exception_011",
    TrackingStatus.expired: "Expired_001",
}
KUAIDI100_CODES: dict[TrackingStatus, str] = {
    TrackingStatus.pending: "101",
    TrackingStatus.info_received: "1",
    TrackingStatus.in_transit: "0",
    TrackingStatus.out_for_delivery: "5",
    TrackingStatus.available_for_pickup: "501",
    TrackingStatus.delivered: "3",
    TrackingStatus.failed_attempt: "2",
    TrackingStatus.exception: "2",
    TrackingStatus.returned: "6",
    TrackingStatus.expired: "202",
}
_KUAIDI100_NAMES = {code: name for name, code in STATE_NAMES.items()}


# -- AfterShip -------------------------------------------------------------------


def aftership_signature(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def aftership_tracking(
    *, carrier: str, number: str, checkpoints: Sequence[AfterShipScan]
) -> dict[str, Any]:
    """An AfterShip tracking object (2024-04 shape, the fields we read and a few more)."""
    items = [_aftership_checkpoint(carrier, scan) for scan in checkpoints]
    latest = items[-1] if items else {"tag": "Pending", "subtag": "Pending_001"}
    return {
        "id": uuid.uuid4().hex,
        "tracking_number": number,
        "slug": get_carrier(carrier).aftership_slug,
        "active": latest["tag"] not in ("Delivered", "Expired"),
        "tag": latest["tag"],
        "subtag": latest.get("subtag"),
        "subtag_message": latest.get("subtag"),
        "checkpoints": items,
    }


def _aftership_checkpoint(carrier: str, scan: AfterShipScan) -> dict[str, Any]:
    code, when, location = scan
    tag, _, _ = code.partition("_")
    return {
        "slug": get_carrier(carrier).aftership_slug,
        "checkpoint_time": when,
        "created_at": datetime.now(UTC).isoformat(),
        "tag": tag,
        # A bare tag ("InTransit") stands for a checkpoint without a subtag.
        "subtag": code if "_" in code else None,
        "location": location,
        "city": None,
        "state": None,
        "country_region": "CHN",
        "message": f"{code} at {location or 'somewhere'}",
        "raw_tag": "",
    }


def aftership_push(
    secret: str,
    *,
    carrier: str,
    number: str,
    checkpoints: Sequence[AfterShipScan],
    event_id: str | None = None,
    event: str = "tracking_update",
) -> tuple[bytes, dict[str, str]]:
    """A signed AfterShip webhook delivery: (raw body, headers)."""
    payload = {
        "event": event,
        "event_id": event_id or str(uuid.uuid4()),
        "is_tracking_first_tag": False,
        "msg": aftership_tracking(carrier=carrier, number=number, checkpoints=checkpoints),
        "ts": int(datetime.now(UTC).timestamp()),
    }
    body = json.dumps(payload, ensure_ascii=False).encode()
    return body, signed_aftership_headers(secret, body)


def signed_aftership_headers(secret: str, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "aftership-hmac-sha256": aftership_signature(secret, body),
    }


# -- Kuaidi100 -------------------------------------------------------------------


def kuaidi100_result(
    *, carrier: str, number: str, items: Sequence[Kuaidi100Item], state: str | None = None
) -> dict[str, Any]:
    """A Kuaidi100 result (a push's lastResult or a query answer); items newest first.

    An item given by code gets `statusCode` and its Chinese name in `status`, one
    given by name gets only `status`, as a push without resultv2 detail would.
    `state` defaults to the newest item's code.
    """
    data = [_kuaidi100_item(item) for item in items]
    newest = data[0] if data else {}
    state = state or newest.get("statusCode") or STATE_NAMES.get(newest.get("status", ""), "0")
    return {
        "message": "ok",
        "nu": number,
        "ischeck": "1" if state.startswith("3") else "0",
        "com": get_carrier(carrier).kuaidi100_code,
        "status": "200",
        "condition": "F00",
        "state": state,
        "data": data,
    }


def _kuaidi100_item(item: Kuaidi100Item) -> dict[str, Any]:
    code_or_name, when, area = item
    by_code = code_or_name.isdigit()
    name = _KUAIDI100_NAMES.get(code_or_name, "在途") if by_code else code_or_name
    entry: dict[str, Any] = {
        "time": when,
        "ftime": when,
        "context": f"【{area or '网点'}】快件{name}",
        "status": name,
        "areaName": area,
    }
    if by_code:
        entry["statusCode"] = code_or_name
    return entry


def kuaidi100_push(
    salt: str,
    *,
    carrier: str,
    number: str,
    items: Sequence[Kuaidi100Item],
    status: str = "polling",
    message: str = "",
    state: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A signed Kuaidi100 subscription push: (form body, headers)."""
    param = {
        "status": status,
        "billstatus": "check" if status == "shutdown" else "got",
        "message": message,
        "lastResult": kuaidi100_result(carrier=carrier, number=number, items=items, state=state),
    }
    return kuaidi100_form(salt, json.dumps(param, ensure_ascii=False))


def kuaidi100_form(
    salt: str, param: str, *, sign: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """A push form around any param text; `sign` overrides the right signature."""
    body = urlencode({"param": param, "sign": sign if sign is not None else sign_md5(param + salt)})
    return body.encode(), {"content-type": "application/x-www-form-urlencoded"}


def beijing_time(moment: datetime) -> str:
    """A moment as Kuaidi100 writes it: Beijing wall-clock time, no offset."""
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
