"""The 12-digit statistical division code: province 2, city 2, county 2, township 3, village 3."""

from __future__ import annotations

import enum
import re

from services.errors import Invalid

_CODE = re.compile(r"^[0-9]{12}$")


class Level(enum.StrEnum):
    province = "province"
    city = "city"
    county = "county"
    township = "township"
    village = "village"


# Length of the significant prefix at each level.
PREFIX_LENGTH = {
    Level.province: 2,
    Level.city: 4,
    Level.county: 6,
    Level.township: 9,
    Level.village: 12,
}
_SEGMENTS = ((0, 2), (2, 4), (4, 6), (6, 9), (9, 12))


def level_of(code: str, *, field: str = "code") -> Level:
    """The level a well-formed code names; malformed codes raise Invalid."""
    if not _CODE.match(code):
        raise Invalid("A region code has exactly 12 digits.", field=field)
    parts = [code[a:b] for a, b in _SEGMENTS]
    if int(parts[0]) == 0:
        raise Invalid("The province part of a region code cannot be 00.", field=field)
    depth = 0
    for index, part in enumerate(parts):
        if int(part) != 0:
            if depth != index:
                raise Invalid(
                    "A region code cannot skip a level (zeros before digits).", field=field
                )
            depth = index + 1
    return list(Level)[depth - 1]


def prefix_of(code: str) -> str:
    return code[: PREFIX_LENGTH[level_of(code)]]


def parent_of(code: str) -> str | None:
    level = level_of(code)
    if level is Level.province:
        return None
    levels = list(Level)
    parent = levels[levels.index(level) - 1]
    return code[: PREFIX_LENGTH[parent]].ljust(12, "0")


def county_of(code: str) -> str:
    return code[:6].ljust(12, "0")


def code_range(code: str) -> tuple[str, str]:
    """Lowest and highest 12-digit codes under a region, for index range scans."""
    prefix = prefix_of(code)
    return prefix.ljust(12, "0"), prefix.ljust(12, "9")


def normalise(code: str, *, field: str = "code") -> str:
    """Accept a 6-digit county code or any prefix-padded form; answer 12 digits."""
    code = code.strip()
    if re.fullmatch(r"[0-9]{6}|[0-9]{9}", code):
        code = code.ljust(12, "0")
    level_of(code, field=field)
    return code
