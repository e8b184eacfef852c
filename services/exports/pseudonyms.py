"""Keyed pseudonyms that stand for household ids in exports (DESIGN rule 7).

A pseudonym is HMAC-SHA256 of the household id (its canonical text) under the
export key, in hex, cut to `LENGTH` characters: the same household gets the same
pseudonym in every export, so files can be joined with each other, but not with
anything that knows real ids. PostgreSQL computes it, so that the CSV export stays
one COPY: HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)) with K padded to the
block size; the two padded keys are computed here and sent as bytea parameters.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

from sqlalchemy import ColumnElement, LargeBinary, Text, bindparam, cast, func

# 80 bits: a collision among a few million households is about as likely as 1 in 10^11.
LENGTH = 20
_BLOCK = 64  # SHA-256's block size, in bytes


def padded_keys(key: bytes) -> tuple[bytes, bytes]:
    """(K ^ ipad, K ^ opad) of RFC 2104 for SHA-256."""
    if not key:
        raise ValueError("the pseudonym key must not be empty")
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def pseudonym(key: bytes, household_id: uuid.UUID) -> str:
    """The pseudonym of one household, as the SQL expression computes it."""
    return hmac.new(key, str(household_id).encode(), hashlib.sha256).hexdigest()[:LENGTH]


def pseudonym_sql(household_id: ColumnElement[Any], key: bytes) -> ColumnElement[str]:
    """SQL computing `pseudonym(key, ...)` of a uuid column; the key travels as two binds."""
    ipad, opad = padded_keys(key)
    inner_key = bindparam("pseudonym_ipad", ipad, type_=LargeBinary)
    outer_key = bindparam("pseudonym_opad", opad, type_=LargeBinary)
    message = func.convert_to(cast(household_id, Text), "UTF8")
    inner = func.sha256(inner_key.op("||")(message))
    outer = func.sha256(outer_key.op("||")(inner))
    return func.substr(func.encode(outer, "hex"), 1, LENGTH)
