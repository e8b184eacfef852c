"""The carriers we ship with, their codes at each tracking provider, and number checks.

Sellers type tracking numbers by hand, so a number is cleaned up and checked once,
when it is entered; a typo caught there costs nothing, one caught by a week of
"not found" from the providers costs a customer. The checks are deliberately
conservative: a number is refused only when it is certainly wrong for its carrier.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from services.errors import Invalid

# Every carrier's numbers are plain letters and digits; anything shorter or longer
# than this is not a tracking number at all (the longest real ones are ~30).
_ANY_NUMBER = re.compile(r"[A-Z0-9]{6,40}")
# What people paste around and inside a number: spaces and hyphens.
_SEPARATORS = re.compile(r"[\s\-]+")

# UPU S10 (international and some domestic postal items): two service letters,
# an eight-digit serial, a check digit, and the ISO country code, e.g. RA473124829GB.
_S10 = re.compile(r"([A-Z]{2})(\d{8})(\d)([A-Z]{2})")
_S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)

# Shapes reused by several carriers.
_DIGITS_10_15 = re.compile(r"\d{10,15}")  # the domestic express companies' plain numbers


@dataclass(frozen=True, slots=True)
class Carrier:
    """One carrier, with the names the providers know it by.

    A cleaned number is accepted when it matches one of `formats`, or, for a postal
    carrier (`s10`), when it has the UPU S10 shape and its check digit is right.
    """

    code: str  # ours, stored on shipments and shown in the API
    name: str
    aftership_slug: str
    kuaidi100_code: str
    formats: tuple[re.Pattern[str], ...]
    s10: bool = False
    format_hint: str = ""  # for the error message when a number is refused
    # Kuaidi100 answers a query for this carrier only with the recipient's (or
    # sender's) phone: SF Express and ZTO ask for it, against scraping of waybills.
    query_needs_phone: bool = False


def _carriers(*carriers: Carrier) -> Mapping[str, Carrier]:
    return MappingProxyType({carrier.code: carrier for carrier in carriers})


CARRIERS: Mapping[str, Carrier] = _carriers(
    Carrier(
        code="sf",
        name="SF Express",
        aftership_slug="sf-express",
        kuaidi100_code="shunfeng",
        query_needs_phone=True,
        # Current waybills are "SF" + 13 digits, older ones "SF" + 12 or 12 bare digits.
        formats=(re.compile(r"SF\d{12,13}"), re.compile(r"\d{12}")),
        format_hint="SF followed by 12 or 13 digits, or 12 digits",
    ),
    Carrier(
        code="ems",
        name="China Post EMS",
        aftership_slug="china-ems",
        kuaidi100_code="ems",
        # Domestic EMS numbers are 13 digits; international ones are S10.
        formats=(re.compile(r"\d{13}"),),
        s10=True,
        format_hint="13 digits, or an international number like EA123456785CN",
    ),
    Carrier(
        code="chinapost",
        name="China Post",
        aftership_slug="china-post",
        kuaidi100_code="youzhengguonei",
        formats=(re.compile(r"\d{13}"),),
        s10=True,
        format_hint="13 digits, or an international number like RR123456785CN",
    ),
    Carrier(
        code="yto",
        name="YTO Express",
        aftership_slug="yto",
        kuaidi100_code="yuantong",
        # "YT" + 13 digits today (a little longer for some services); older
        # waybills were plain digits, which are still tracked.
        formats=(re.compile(r"YT\d{13,15}"), _DIGITS_10_15),
        format_hint="YT followed by 13 to 15 digits",
    ),
    Carrier(
        code="zto",
        name="ZTO Express",
        aftership_slug="zto-express",
        kuaidi100_code="zhongtong",
        query_needs_phone=True,
        formats=(_DIGITS_10_15,),
        format_hint="10 to 15 digits",
    ),
    Carrier(
        code="sto",
        name="STO Express",
        aftership_slug="sto",
        kuaidi100_code="shentong",
        formats=(_DIGITS_10_15,),
        format_hint="10 to 15 digits",
    ),
    Carrier(
        code="yunda",
        name="Yunda Express",
        aftership_slug="yunda",
        kuaidi100_code="yunda",
        formats=(_DIGITS_10_15,),
        format_hint="10 to 15 digits",
    ),
    Carrier(
        code="jd",
        name="JD Logistics",
        aftership_slug="jd",
        kuaidi100_code="jd",
        # "JD" + a letter or two and digits (JDVA..., JD00...); plain digits for older ones.
        formats=(re.compile(r"JD[A-Z0-9]{12,15}"), _DIGITS_10_15),
        format_hint="JD followed by 12 to 15 letters and digits",
    ),
)

_BY_AFTERSHIP = MappingProxyType({c.aftership_slug: c for c in CARRIERS.values()})
_BY_KUAIDI100 = MappingProxyType({c.kuaidi100_code: c for c in CARRIERS.values()})


def get_carrier(code: str) -> Carrier:
    """Our carrier for `code`; an unknown code is the caller's input error."""
    carrier = CARRIERS.get(code.strip().lower())
    if carrier is None:
        known = ", ".join(sorted(CARRIERS))
        raise Invalid(
            f"Unknown carrier {code!r}; known carriers: {known}.",
            field="carrier",
            reason="unknown-carrier",
        )
    return carrier


def by_aftership_slug(slug: str) -> Carrier | None:
    return _BY_AFTERSHIP.get(slug.strip().lower())


def by_kuaidi100_code(code: str) -> Carrier | None:
    return _BY_KUAIDI100.get(code.strip().lower())


def clean_tracking_number(number: str) -> str:
    """The canonical spelling of a number, without judging it.

    Used on numbers that come back from providers too, so that their spelling and
    the one stored when the seller typed it always compare equal.
    """
    # NFKC first: a Chinese input method types full-width letters, digits and spaces
    # ("ＳＦ１２３"), which are the same number to the seller and to the carrier.
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", number)).upper()


def normalise_tracking_number(carrier_code: str, number: str) -> str:
    """The cleaned number, or `Invalid` when it cannot be one of this carrier's."""
    carrier = get_carrier(carrier_code)
    cleaned = clean_tracking_number(number)
    if not _ANY_NUMBER.fullmatch(cleaned) or not _carrier_accepts(carrier, cleaned):
        hint = f" ({carrier.name} numbers look like: {carrier.format_hint})"
        raise Invalid(
            f"{number.strip()!r} is not a valid tracking number{hint}.",
            field="tracking_number",
            reason="invalid-tracking-number",
        )
    return cleaned


def _carrier_accepts(carrier: Carrier, number: str) -> bool:
    if carrier.s10:
        s10 = _S10.fullmatch(number)
        if s10 is not None:
            # The check digit catches nearly every single-digit typo and swap.
            return s10_check_digit(s10.group(2)) == int(s10.group(3))
    return any(pattern.fullmatch(number) for pattern in carrier.formats)


def s10_check_digit(serial: str) -> int:
    """UPU S10 check digit of an eight-digit serial number."""
    if len(serial) != len(_S10_WEIGHTS) or not (serial.isascii() and serial.isdigit()):
        raise ValueError("an S10 serial number is exactly eight digits")
    total = sum(int(digit) * weight for digit, weight in zip(serial, _S10_WEIGHTS, strict=True))
    check = 11 - total % 11
    return {10: 0, 11: 5}.get(check, check)
