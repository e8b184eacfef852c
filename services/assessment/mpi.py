"""Alkire–Foster multidimensional poverty over the file cards of a region.

PostgreSQL reduces the households of a scope to their deprivation profiles: one
row per combination of deprivations (at most 2^8), with the households and
persons that have it, so that nothing held in Python grows with the population.
The measures are then computed exactly, with fractions: the cutoff test c ≥ k
must not depend on floating point (1/6 + 3 × 1/18 is exactly 1/3).

Household deprivations apply to every member; persons are the unit (n, q, H).
Deregistered households have left the registry and households without members
have nobody to count: neither is part of the population.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    FromClause,
    String,
    Uuid,
    column,
    func,
    not_,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from services.assessment.households import household_year_sql
from services.assessment.scope import Scope, sql_filter
from services.assessment.thresholds import YEARS, thresholds_for
from services.errors import Invalid
from services.households.models import (
    Education,
    Health,
    Household,
    HouseholdStatus,
    Labour,
    Member,
)

IndicatorName = Literal[
    "schooling",
    "attendance",
    "health",
    "medical_insurance",
    "housing",
    "drinking_water",
    "labour",
    "income",
]
Dimension = Literal["education", "health", "living_standard"]

# A deprivation as SQL over one household: `base` carries the household's own
# columns (guarantees, income of the year), Member the rows aggregated per household.
Rule = Callable[[FromClause, int], ColumnElement[bool]]

SCHOOLED = (
    Education.primary,
    Education.junior_secondary,
    Education.senior_secondary,
    Education.vocational,
    Education.college,
)
SCHOOL_AGE = (6, 15)  # compulsory education: ages in the assessment year
ILL = (Health.serious_illness, Health.disabled)
ABLE = (Labour.ordinary, Labour.skilled)


def _any_member(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    # count(*) FILTER is false, never NULL, when no member matches or a value is unknown.
    return func.count().filter(condition) > 0


def _no_member(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    return func.count().filter(condition) == 0


def _school_age_out_of_school(base: FromClause, year: int) -> ColumnElement[bool]:
    youngest, oldest = SCHOOL_AGE
    # A member without a birth year cannot be known to be of school age.
    return _any_member(
        Member.birth_year.between(year - oldest, year - youngest) & not_(Member.in_school)
    )


@dataclass(frozen=True, slots=True)
class Indicator:
    name: IndicatorName
    dimension: Dimension
    default_weight: Fraction
    rule: str  # the deprivation rule in words, as the API documents it
    deprived: Rule
    needs_income: bool = False


CATALOGUE: dict[str, Indicator] = {
    i.name: i
    for i in (
        Indicator(
            "schooling",
            "education",
            Fraction(1, 6),
            "No member has completed at least primary education.",
            lambda base, year: _no_member(Member.education.in_(SCHOOLED)),
        ),
        Indicator(
            "attendance",
            "education",
            Fraction(1, 6),
            f"A member of school age ({SCHOOL_AGE[0]} to {SCHOOL_AGE[1]} years old in the "
            "assessment year, by birth year) is not in school; a member without a birth "
            "year is not counted as of school age.",
            _school_age_out_of_school,
        ),
        Indicator(
            "health",
            "health",
            Fraction(1, 6),
            "A member is seriously ill or disabled.",
            lambda base, year: _any_member(Member.health.in_(ILL)),
        ),
        Indicator(
            "medical_insurance",
            "health",
            Fraction(1, 6),
            "A member has no basic medical insurance, or the household's basic_medical "
            "guarantee does not hold.",
            lambda base, year: or_(
                _any_member(not_(Member.medical_insurance)), not_(base.c.basic_medical)
            ),
        ),
        Indicator(
            "housing",
            "living_standard",
            Fraction(1, 12),
            "The household's safe_housing guarantee does not hold.",
            lambda base, year: not_(base.c.safe_housing),
        ),
        Indicator(
            "drinking_water",
            "living_standard",
            Fraction(1, 12),
            "The household's safe_drinking_water guarantee does not hold.",
            lambda base, year: not_(base.c.safe_drinking_water),
        ),
        Indicator(
            "labour",
            "living_standard",
            Fraction(1, 12),
            "No member has ordinary or skilled labour capacity.",
            lambda base, year: _no_member(Member.labour.in_(ABLE)),
        ),
        Indicator(
            "income",
            "living_standard",
            Fraction(1, 12),
            "Per-capita income of the year, as in the household-year rows (ledger income "
            "counted in assessment, so without flagged or refunded sales, plus recorded "
            "other income net of production costs), is at or under the year's poverty line.",
            lambda base, year: base.c.per_capita_fen <= base.c.poverty_line_fen,
            needs_income=True,
        ),
    )
}
DEFAULT_WEIGHTS: dict[str, Fraction] = {i.name: i.default_weight for i in CATALOGUE.values()}
DEFAULT_CUTOFF = Fraction(1, 3)
# The global MPI's bands around its cutoff of 1/3.
VULNERABLE_FROM = Fraction(1, 5)
SEVERE_FROM = Fraction(1, 2)

# "1/3", "0.4", "1": small enough that no input makes the arithmetic heavy.
_FRACTION = re.compile(r"([0-9]{1,9})(?:/([0-9]{1,9})|\.([0-9]{1,9}))?")


def parse_fraction(value: str, *, field: str) -> Fraction:
    """A fraction written as `a/b` or a decimal; Invalid naming `field` otherwise."""
    match = _FRACTION.fullmatch(value.strip(" "))
    if match is None:
        raise Invalid(
            f"{value!r} is not a fraction: write it as a/b (1/3) or a decimal (0.4).",
            field=field,
        )
    whole, denominator, decimals = match.groups()
    if denominator is not None:
        if int(denominator) == 0:
            raise Invalid(f"{value!r} divides by zero.", field=field)
        return Fraction(int(whole), int(denominator))
    return Fraction(f"{whole}.{decimals}" if decimals else whole)


def check_cutoff(cutoff: Fraction) -> Fraction:
    if not 0 < cutoff <= 1:
        raise Invalid("The cutoff k lies in (0, 1].", field="k")
    return cutoff


def check_weights(weights: Mapping[str, Fraction]) -> dict[str, Fraction]:
    """Known indicators, each weighted above zero, the weights summing exactly to 1."""
    unknown = sorted(set(weights) - set(CATALOGUE))
    if unknown:
        raise Invalid(
            f"Unknown indicator {', '.join(unknown)}; known: {', '.join(CATALOGUE)}.",
            field="weights",
        )
    if not weights:
        raise Invalid("Name at least one indicator.", field="weights")
    for name, weight in weights.items():
        if weight <= 0:
            raise Invalid(f"The weight of {name} must be positive.", field="weights")
    total = sum(weights.values(), Fraction(0))
    if total != 1:
        raise Invalid(f"The weights sum to {total}, not exactly 1.", field="weights")
    # Catalogue order, whatever the order asked in.
    return {name: weights[name] for name in CATALOGUE if name in weights}


def parse_weights(value: str) -> dict[str, Fraction]:
    """`name:fraction,...`, e.g. `schooling:1/4,health:1/4,housing:1/4,income:1/4`."""
    weights: dict[str, Fraction] = {}
    for entry in value.split(","):
        name, colon, weight = entry.partition(":")
        name = name.strip()
        if not colon or not name:
            raise Invalid(
                f"{entry.strip()!r} is not `indicator:weight` (e.g. schooling:1/6).",
                field="weights",
            )
        if name in weights:
            raise Invalid(f"{name} is weighted twice.", field="weights")
        weights[name] = parse_fraction(weight, field="weights")
    return check_weights(weights)


@dataclass(frozen=True, slots=True)
class Profile:
    """Households sharing one combination of deprivations (in the order of the weights)."""

    deprived: tuple[bool, ...]
    households: int
    persons: int


@dataclass(frozen=True, slots=True)
class IndicatorMeasure:
    indicator: Indicator
    weight: Fraction
    uncensored: Fraction  # share of persons deprived in it
    censored: Fraction  # h_j(k): share of persons poor and deprived in it
    contribution: Fraction  # w_j h_j(k) / M0: shares of M0 summing to 1


@dataclass(frozen=True, slots=True)
class Measures:
    cutoff: Fraction
    households: int
    poor_households: int
    persons: int  # n
    poor: int  # q
    headcount: Fraction  # H = q / n
    intensity: Fraction  # A: average score of the poor
    adjusted_headcount: Fraction  # M0 = H × A
    vulnerable: Fraction  # share of persons with VULNERABLE_FROM ≤ c < k
    severe: Fraction  # share of persons poor with c ≥ SEVERE_FROM
    indicators: list[IndicatorMeasure]


def _share(part: int | Fraction, whole: int | Fraction) -> Fraction:
    return Fraction(part) / whole if whole else Fraction(0)


def measure(
    profiles: Sequence[Profile], weights: Mapping[str, Fraction], cutoff: Fraction
) -> Measures:
    """The Alkire–Foster measures of a population given as deprivation profiles.

    An empty population (n = 0) answers zeros; so does a population without poor.
    """
    names = list(weights)
    n = q = households = poor_households = 0
    vulnerable = severe = 0
    score_of_poor = Fraction(0)  # Σ c_i(k)
    deprived = dict.fromkeys(names, 0)
    censored = dict.fromkeys(names, 0)
    for profile in profiles:
        score = sum(
            (weights[name] for name, g in zip(names, profile.deprived, strict=True) if g),
            Fraction(0),
        )
        poor = score >= cutoff
        n += profile.persons
        households += profile.households
        for name, g in zip(names, profile.deprived, strict=True):
            if g:
                deprived[name] += profile.persons
                if poor:
                    censored[name] += profile.persons
        if poor:
            q += profile.persons
            poor_households += profile.households
            score_of_poor += score * profile.persons
            if score >= SEVERE_FROM:
                severe += profile.persons
        elif score >= VULNERABLE_FROM:
            vulnerable += profile.persons
    m0 = _share(score_of_poor, n)
    return Measures(
        cutoff=cutoff,
        households=households,
        poor_households=poor_households,
        persons=n,
        poor=q,
        headcount=_share(q, n),
        intensity=_share(score_of_poor, q),
        adjusted_headcount=m0,
        vulnerable=_share(vulnerable, n),
        severe=_share(severe, n),
        indicators=[
            IndicatorMeasure(
                indicator=CATALOGUE[name],
                weight=weights[name],
                uncensored=_share(deprived[name], n),
                censored=_share(censored[name], n),
                contribution=_share(weights[name] * _share(censored[name], n), m0),
            )
            for name in names
        ],
    )


def _households_of(scope: Scope) -> FromClause:
    """The households of the scope with the columns the non-income rules read."""
    h = aliased(Household, name="h")
    return (
        select(
            h.id.label("household_id"),
            h.status.label("status"),
            h.basic_medical.label("basic_medical"),
            h.safe_housing.label("safe_housing"),
            h.safe_drinking_water.label("safe_drinking_water"),
        )
        .where(text(sql_filter("h")).bindparams(**scope.params))
        .subquery("base")
    )


async def _household_years_of(session: AsyncSession, scope: Scope, year: int) -> FromClause:
    """The household-year rows of the scope: income counted exactly as officers see it."""
    threshold = await thresholds_for(session, year)
    return (
        household_year_sql(scope, year, threshold)
        .columns(
            column("household_id", Uuid),
            column("status", String),
            column("basic_medical", Boolean),
            column("safe_housing", Boolean),
            column("safe_drinking_water", Boolean),
            column("per_capita_fen", BigInteger),
            column("poverty_line_fen", BigInteger),
        )
        .subquery("base")
    )


async def deprivation_profiles(
    session: AsyncSession, scope: Scope, year: int, names: Sequence[str]
) -> list[Profile]:
    """The scope's households grouped by their deprivations in `names`, in one statement."""
    indicators = [CATALOGUE[name] for name in names]
    if any(i.needs_income for i in indicators):
        # The year's thresholds are needed: a year without them is NotFound.
        base = await _household_years_of(session, scope, year)
    else:
        base = _households_of(scope)
    per_household = (
        select(
            base.c.household_id,
            func.count().label("persons"),
            *(i.deprived(base, year).label(i.name) for i in indicators),
        )
        # The inner join leaves out households without members.
        .select_from(base.join(Member, Member.household_id == base.c.household_id))
        .where(base.c.status != HouseholdStatus.deregistered.value)
        .group_by(*base.c)
        .subquery("per_household")
    )
    flags = [per_household.c[name] for name in names]
    stmt = select(
        *flags,
        func.count().label("households"),
        func.sum(per_household.c.persons).label("persons"),
    ).group_by(*flags)
    return [
        Profile(
            deprived=tuple(bool(row[name]) for name in names),
            households=int(row["households"]),
            persons=int(row["persons"]),
        )
        for row in (await session.execute(stmt)).mappings()
    ]


async def multidimensional_poverty(
    session: AsyncSession,
    scope: Scope,
    year: int,
    *,
    cutoff: Fraction = DEFAULT_CUTOFF,
    weights: Mapping[str, Fraction] | None = None,
) -> Measures:
    """H, A, M0 and each indicator's headcounts and contribution, for a region and year."""
    if not YEARS[0] <= year <= YEARS[1]:
        raise Invalid("The year is out of range.", field="year")
    cutoff = check_cutoff(cutoff)
    chosen = check_weights(DEFAULT_WEIGHTS if weights is None else weights)
    profiles = await deprivation_profiles(session, scope, year, list(chosen))
    return measure(profiles, chosen, cutoff)
