"""Resident identity numbers (居民身份证号码): validated, then kept only as a keyed hash.

The check covers length, digits, the ISO 7064 MOD 11-2 check character and a
real birth date not in the future. The region prefix is not checked against a
table: division codes are renamed and retired over the years, and an old but
genuine number must still be accepted.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import date

from stdnum.cn import ric
from stdnum.exceptions import ValidationError

from services.errors import Invalid


@dataclass(frozen=True, slots=True)
class IdNumber:
    hash: str
    last4: str
    birth_date: date


def parse_id_number(value: str, *, key: bytes, today: date, field: str) -> IdNumber:
    number = ric.compact(value).upper()
    if len(number) != 18 or not number[:17].isdigit():
        raise Invalid("An ID number has 17 digits and a check character.", field=field)
    if number[-1] != ric.calc_check_digit(number):
        raise Invalid("The ID number's check character is wrong.", field=field)
    try:
        birth = ric.get_birth_date(number)
    except ValidationError as exc:
        raise Invalid("The ID number holds no valid birth date.", field=field) from exc
    if not date(1900, 1, 1) <= birth <= today:
        raise Invalid("The ID number's birth date is out of range.", field=field)
    digest = hmac.new(key, number.encode(), hashlib.sha256).hexdigest()
    return IdNumber(hash=digest, last4=number[-4:], birth_date=birth)


def make_id_number(region6: str, birth: date, sequence: int) -> str:
    """A well-formed number for fictional data (demo, tests, benchmarks)."""
    body = f"{region6}{birth:%Y%m%d}{sequence % 1000:03d}"
    # calc_check_digit reads the first 17 characters of a full-length number.
    return body + str(ric.calc_check_digit(body + "0"))
