"""Household-year rows: income counted for a year, per capita, exit eligibility, monitoring.

One SQL statement computes them in PostgreSQL, for a page of an officer's list
or for every household of a region (exports): households of the scope, their
size, the ledger income of the year and the year before (entries held by an open
or excluded flag left out, as `services.ledger.flags.counted` rules), recorded
other income net of production costs, and the verdicts against the year's
thresholds. Nothing is loaded into Python to be added up.

Per capita is in whole fen, rounded down. A household is exit-eligible when its
per-capita income is above the poverty line and every guarantee indicator holds;
`failing` names each reason otherwise. `monitoring` flags a per-capita income
under the monitoring line, or one that fell from the year before by more than the
year's `income_drop_bp`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.assessment.models import Threshold
from services.assessment.scope import Scope, sql_filter
from services.assessment.thresholds import thresholds_for
from services.households.models import HouseholdStatus
from services.households.service import GUARANTEES
from services.ledger.flags import HOLDING
from services.pagination import Page, decode_cursor, encode_cursor
from services.regions.codes import Level

# Ledger income in this currency is assessed (the poverty line is in yuan).
CURRENCY = "CNY"

# The columns of a household-year row, in order; `head_name` is personal data.
COLUMNS = (
    "household_id",
    "county_code",
    "village_code",
    "head_name",
    "poor",
    "status",
    "year",
    "size",
    "ledger_income_fen",
    "ledger_left_out_fen",
    "other_income_fen",
    "total_income_fen",
    "per_capita_fen",
    "poverty_line_fen",
    "monitoring_line_fen",
    "previous_per_capita_fen",
    "exit_eligible",
    "failing",
    "monitoring",
    "monitoring_reasons",
    *GUARANTEES,
)
PERSONAL = frozenset({"head_name"})

# The statuses of a flag that hold income back, as SQL literals (flags.counted()'s rule).
_HOLDING = ", ".join(f"'{status.value}'" for status in HOLDING)
_GUARANTEE_REASONS = ",\n".join(f"CASE WHEN NOT f.{g} THEN '{g}' END" for g in GUARANTEES)

_SQL = """
WITH hh AS (
    SELECT h.id, h.county_code, h.village_code, h.poor, h.status, {guarantees}
    FROM households h
    WHERE {scope}{status}{after}
    {inner_limit}
),
held AS (
    -- Households' parts of lines that a flag keeps out of assessment (open or excluded).
    SELECT DISTINCT fl.line_id, fl.household_id
    FROM attribution_flag_lines fl
    JOIN attribution_flags f ON f.id = fl.flag_id
    WHERE f.status IN ({holding}) AND {flag_scope}
),
ledger AS (
    -- One row per household with both years side by side: one pass, one join.
    SELECT e.household_id,
           coalesce(sum(e.amount_fen) FILTER (WHERE e.year = CAST(:year AS smallint)), 0)::bigint
               AS recognised_fen,
           coalesce(sum(e.amount_fen) FILTER (
               WHERE e.year = CAST(:year AS smallint) AND held.line_id IS NULL), 0)::bigint
               AS counted_fen,
           coalesce(sum(e.amount_fen) FILTER (
               WHERE e.year = CAST(:previous_year AS smallint) AND held.line_id IS NULL), 0)::bigint
               AS previous_counted_fen,
           bool_or(e.year = CAST(:previous_year AS smallint)) AS has_previous
    FROM ledger_entries e
    LEFT JOIN held ON held.line_id = e.line_id AND held.household_id = e.household_id
    {ledger_join} {ledger_scope}
      AND e.year IN (CAST(:year AS smallint), CAST(:previous_year AS smallint))
      AND e.currency = CAST(:currency AS char(3))
    GROUP BY e.household_id
),
other AS (
    SELECT i.household_id,
           coalesce(sum(i.signed_fen) FILTER (WHERE i.year = CAST(:year AS smallint)), 0)::bigint
               AS net_fen,
           coalesce(sum(i.signed_fen) FILTER (
               WHERE i.year = CAST(:previous_year AS smallint)), 0)::bigint AS previous_net_fen,
           bool_or(i.year = CAST(:previous_year AS smallint)) AS has_previous
    FROM (
        SELECT i.household_id, i.year,
               CASE WHEN i.kind = 'production_cost' THEN -i.amount_fen ELSE i.amount_fen END
                   AS signed_fen
        FROM household_incomes i
        {income_join} {income_scope}
          AND i.year IN (CAST(:year AS smallint), CAST(:previous_year AS smallint))
          AND i.currency = CAST(:currency AS char(3))
    ) i
    GROUP BY i.household_id
),
people AS (
    SELECT m.household_id, count(*) AS size,
           min(m.name) FILTER (WHERE m.relation = 'head') AS head_name
    FROM household_members m
    JOIN hh ON hh.id = m.household_id
    GROUP BY m.household_id
),
figures AS (
    SELECT hh.*, coalesce(p.size, 0) AS size, p.head_name,
           coalesce(l.counted_fen, 0) AS ledger_income_fen,
           coalesce(l.recognised_fen, 0) - coalesce(l.counted_fen, 0) AS ledger_left_out_fen,
           coalesce(o.net_fen, 0) AS other_income_fen,
           coalesce(l.counted_fen, 0) + coalesce(o.net_fen, 0) AS total_income_fen,
           CASE WHEN p.size > 0 THEN floor(
               (coalesce(l.counted_fen, 0) + coalesce(o.net_fen, 0))::numeric / p.size
           )::bigint END AS per_capita_fen,
           CASE WHEN p.size > 0 AND (l.has_previous OR o.has_previous)
               THEN floor(
                   (coalesce(l.previous_counted_fen, 0) + coalesce(o.previous_net_fen, 0))::numeric
                   / p.size
               )::bigint END AS previous_per_capita_fen
    FROM hh
    LEFT JOIN people p ON p.household_id = hh.id
    LEFT JOIN ledger l ON l.household_id = hh.id
    LEFT JOIN other o ON o.household_id = hh.id
),
verdicts AS (
    SELECT f.*,
           array_remove(ARRAY[
               CASE WHEN f.size = 0 THEN 'no_members'
                    WHEN f.per_capita_fen <= CAST(:line_fen AS bigint) THEN 'income' END,
               {guarantee_reasons}
           ]::text[], NULL) AS failing,
           array_remove(ARRAY[
               CASE WHEN f.per_capita_fen < CAST(:monitoring_fen AS bigint)
                    THEN 'under_monitoring_line' END,
               CASE WHEN f.previous_per_capita_fen > 0
                     AND (f.previous_per_capita_fen - f.per_capita_fen) * 10000
                         > CAST(:drop_bp AS bigint) * f.previous_per_capita_fen
                    THEN 'income_drop' END
           ]::text[], NULL) AS monitoring_reasons
    FROM figures f
)
SELECT v.id AS household_id, v.county_code, v.village_code, v.head_name, v.poor, v.status,
       CAST(:year AS integer) AS year, v.size::integer AS size,
       v.ledger_income_fen, v.ledger_left_out_fen, v.other_income_fen, v.total_income_fen,
       v.per_capita_fen, CAST(:line_fen AS bigint) AS poverty_line_fen,
       CAST(:monitoring_fen AS bigint) AS monitoring_line_fen, v.previous_per_capita_fen,
       cardinality(v.failing) = 0 AS exit_eligible, v.failing,
       cardinality(v.monitoring_reasons) > 0 AS monitoring, v.monitoring_reasons,
       {guarantee_columns}
FROM verdicts v
{outer_where}
ORDER BY v.village_code, v.id
{outer_limit}
"""


@dataclass(frozen=True, slots=True)
class Filters:
    status: HouseholdStatus | None = None
    exit_eligible: bool | None = None
    monitoring: bool | None = None

    @property
    def on_verdicts(self) -> bool:
        return self.exit_eligible is not None or self.monitoring is not None


def household_year_sql(
    scope: Scope,
    year: int,
    threshold: Threshold,
    *,
    filters: Filters = Filters(),
    after: tuple[str, uuid.UUID] | None = None,
    limit: int | None = None,
    household_id: uuid.UUID | None = None,
) -> TextClause:
    """The household-year rows of a scope as one statement, with its binds.

    `after` and `limit` page it by (village_code, household id). Without verdict
    filters the page is cut before anything is added up, so a page costs the same
    in a county of a hundred households or of a million.
    """
    params: dict[str, Any] = {
        **scope.params,
        "year": year,
        "previous_year": year - 1,
        "currency": CURRENCY,
        "line_fen": threshold.poverty_line_yuan * 100,
        "monitoring_fen": threshold.monitoring_line_yuan * 100,
        "drop_bp": threshold.income_drop_bp,
    }
    status = ""
    if filters.status is not None:
        status = " AND h.status = CAST(:status AS varchar)"
        params["status"] = filters.status.value
    if household_id is not None:
        status += " AND h.id = CAST(:household_id AS uuid)"
        params["household_id"] = household_id
    keyset = ""
    if after is not None:
        keyset = (
            " AND (h.village_code, h.id)"
            " > (CAST(:after_village AS char(12)), CAST(:after_id AS uuid))"
        )
        params["after_village"], params["after_id"] = after
    outer = []
    if filters.exit_eligible is not None:
        outer.append(
            "cardinality(v.failing) = 0" if filters.exit_eligible else "cardinality(v.failing) > 0"
        )
    if filters.monitoring is not None:
        outer.append(
            ("" if filters.monitoring else "NOT ") + "cardinality(v.monitoring_reasons) > 0"
        )
    limit_clause = ""
    if limit is not None:
        limit_clause = "LIMIT CAST(:limit AS integer)"
        params["limit"] = limit
    # A whole county or more: add up the year's entries of the county range in one pass
    # (hash aggregate) and let the final LEFT JOIN pick the households; joining them
    # first makes the planner walk the ledger household by household, at random.
    whole = (
        limit is None
        and household_id is None
        and after is None
        and scope.level in (Level.province, Level.city, Level.county)
    )
    sql = _SQL.format(
        ledger_join="WHERE e.household_id IS NOT NULL AND"
        if whole
        else "JOIN hh ON hh.id = e.household_id\n    WHERE",
        income_join="WHERE" if whole else "JOIN hh ON hh.id = i.household_id\n    WHERE",
        guarantees=", ".join(f"h.{g}" for g in GUARANTEES),
        scope=sql_filter("h"),
        status=status,
        after=keyset,
        inner_limit=(
            ""
            if filters.on_verdicts or not limit_clause
            else f"ORDER BY h.village_code, h.id\n    {limit_clause}"
        ),
        holding=_HOLDING,
        flag_scope=sql_filter("f", village_column=None),
        ledger_scope=sql_filter("e", village_column=None),
        income_scope=sql_filter("i", village_column=None),
        guarantee_reasons=_GUARANTEE_REASONS,
        guarantee_columns=", ".join(f"v.{g}" for g in GUARANTEES),
        outer_where=("WHERE " + " AND ".join(outer)) if outer else "",
        outer_limit=limit_clause if filters.on_verdicts else "",
    )
    return text(sql).bindparams(**params)


@dataclass(frozen=True, slots=True)
class HouseholdYear:
    household_id: uuid.UUID
    county_code: str
    village_code: str
    head_name: str | None
    poor: bool
    status: str
    year: int
    size: int
    ledger_income_fen: int
    ledger_left_out_fen: int
    other_income_fen: int
    total_income_fen: int
    per_capita_fen: int | None
    poverty_line_fen: int
    monitoring_line_fen: int
    previous_per_capita_fen: int | None
    exit_eligible: bool
    failing: list[str]
    monitoring: bool
    monitoring_reasons: list[str]
    food_clothing: bool
    compulsory_education: bool
    basic_medical: bool
    safe_housing: bool
    safe_drinking_water: bool

    def evidence(self) -> dict[str, Any]:
        """The row as JSON, without personal data: what an exit proposal rests on."""
        return {
            name: (str(value) if isinstance(value, uuid.UUID) else value)
            for name in COLUMNS
            if name not in PERSONAL
            for value in (getattr(self, name),)
        }


_KIND = "assessment-households"


async def household_rows(
    session: AsyncSession,
    scope: Scope,
    year: int,
    *,
    filters: Filters = Filters(),
    limit: int,
    cursor: str | None,
) -> Page[HouseholdYear]:
    threshold = await thresholds_for(session, year)
    after = None
    if cursor is not None:
        village, household = decode_cursor(cursor, _KIND, str, uuid.UUID)
        after = (village, household)
    stmt = household_year_sql(scope, year, threshold, filters=filters, after=after, limit=limit + 1)
    rows = [HouseholdYear(**row._mapping) for row in await session.execute(stmt)]
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = (
        encode_cursor(_KIND, [rows[-1].village_code, str(rows[-1].household_id)]) if more else None
    )
    return Page(rows, next_cursor)


async def household_year(
    session: AsyncSession, scope: Scope, household_id: uuid.UUID, year: int
) -> HouseholdYear | None:
    """One household's row (None when it lies outside the scope)."""
    threshold = await thresholds_for(session, year)
    stmt = household_year_sql(scope, year, threshold, household_id=household_id)
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else HouseholdYear(**row._mapping)
