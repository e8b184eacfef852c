"""Village and county indicators: poverty incidence, e-commerce sales, stores, Taobao villages.

One SQL statement per table computes them in PostgreSQL, grouped by village and
then by county, for one region (the API) or for every village or county of a
region (exports); nothing is added up in Python.

- Households on file for a year are the cards registered by then
  (`registration_year <= year`) and not deregistered by its end. A household's
  status at the end of the year (China time) comes from its status history: the
  last change before the year ended; for a card whose history starts later (entered
  after the fact) the status its first later change moved it from. Poor households
  are registered poor cards (`poor`) that were `registered`, `exit_proposed` or
  `returned` then; poor persons are their members.
- A village's households are its region's `household_count` when set, else its
  file cards. Incidence is poor persons over rural population (none without one),
  and exit needs it strictly below the year's threshold (the western one in a
  western region).
- Sales are the ledger's net revenue recognised in the year for the cooperatives of
  the village: every entry, households' and cooperative's parts, after platform
  fees and refunds, flagged or not (a flag rules on a household's income, not on
  whether the sale took place).
- Stores are the cooperatives of the village founded by the as-of moment (the end
  of the year, or now for the running year); active stores those with a paid,
  not cancelled order in the 30 days before that moment.
- Taobao village: not an urban residents' committee, sales at least the year's
  figure, and at least that many active stores or active stores in at least that
  share of its households.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.assessment.models import Threshold
from services.assessment.scope import Scope, scope_of, sql_filter
from services.assessment.thresholds import ensure_begun, thresholds_for
from services.errors import Invalid
from services.households.models import HouseholdStatus
from services.ledger.service import CHINA
from services.regions.codes import Level, level_of
from services.users.models import User

# Sales in this currency are assessed (the Taobao figure is in yuan).
CURRENCY = "CNY"
ACTIVE_WINDOW = timedelta(days=30)
POOR_STATUSES = (
    HouseholdStatus.registered.value,
    HouseholdStatus.exit_proposed.value,
    HouseholdStatus.returned.value,
)

# The columns of a village row, in order.
VILLAGE_COLUMNS = (
    "village_code",
    "county_code",
    "name",
    "year",
    "as_of",
    "urban",
    "western",
    "households",
    "households_source",
    "file_cards",
    "poor_households",
    "poor_persons",
    "rural_population",
    "incidence_bp",
    "incidence_percent",
    "exit_threshold_bp",
    "passes_exit",
    "sales_fen",
    "stores",
    "active_stores",
    "active_store_share_bp",
    "taobao_sales_threshold_fen",
    "taobao_sales_passes",
    "taobao_active_stores_threshold",
    "taobao_active_stores_passes",
    "taobao_store_share_threshold_bp",
    "taobao_store_share_passes",
    "taobao_village",
    "taobao_failing",
)

# The columns of a county row, in order.
COUNTY_COLUMNS = (
    "county_code",
    "name",
    "year",
    "as_of",
    "western",
    "households",
    "households_source",
    "file_cards",
    "poor_households",
    "poor_persons",
    "rural_population",
    "rural_population_source",
    "villages_without_rural_population",
    "incidence_bp",
    "incidence_percent",
    "exit_threshold_bp",
    "passes_exit",
    "villages",
    "taobao_villages",
    "taobao_village_codes",
    "sales_fen",
    "stores",
    "active_stores",
)

_VILLAGES = """
village AS (
    SELECT r.code, r.name, r.urban, r.western, r.rural_population, r.household_count
    FROM regions r
    WHERE r.level = 'village'
      AND r.code BETWEEN CAST(:village_low AS char(12)) AND CAST(:village_high AS char(12))
),
hh AS (
    SELECT h.id, h.village_code, h.poor, h.status
    FROM households h
    WHERE {household_scope} AND h.registration_year <= CAST(:year AS smallint)
),
status_at_end AS (
    -- Before the end: the latest change wins; none before it: the earliest after it,
    -- read as the status it moved from (the creation row, from nothing, as its own).
    SELECT DISTINCT ON (c.household_id) c.household_id,
           CASE WHEN c.changed_at < CAST(:year_end AS timestamptz) THEN c.to_status
                ELSE coalesce(c.from_status, c.to_status) END AS status
    FROM household_status_changes c
    JOIN hh ON hh.id = c.household_id
    ORDER BY c.household_id,
             c.changed_at < CAST(:year_end AS timestamptz) DESC,
             CASE WHEN c.changed_at < CAST(:year_end AS timestamptz) THEN c.changed_at END DESC,
             CASE WHEN c.changed_at < CAST(:year_end AS timestamptz) THEN c.id END DESC,
             c.changed_at, c.id
),
people AS (
    SELECT m.household_id, count(*) AS size
    FROM household_members m
    JOIN hh ON hh.id = m.household_id
    GROUP BY m.household_id
),
on_file AS (
    SELECT hh.id, hh.village_code, hh.poor, coalesce(st.status, hh.status) AS status
    FROM hh
    LEFT JOIN status_at_end st ON st.household_id = hh.id
),
cards AS (
    SELECT h.village_code,
           count(*) AS file_cards,
           count(*) FILTER (WHERE h.poor AND h.status = ANY(CAST(:poor_statuses AS text[])))
               AS poor_households,
           coalesce(sum(p.size) FILTER (
               WHERE h.poor AND h.status = ANY(CAST(:poor_statuses AS text[]))
           ), 0) AS poor_persons
    FROM on_file h
    LEFT JOIN people p ON p.household_id = h.id
    WHERE h.status <> 'deregistered'
    GROUP BY h.village_code
),
stores AS (
    SELECT c.id, c.village_code, c.created_at
    FROM cooperatives c
    WHERE {cooperative_scope}
),
sales AS (
    SELECT s.village_code, sum(e.amount_fen) AS sales_fen
    FROM ledger_entries e
    JOIN stores s ON s.id = e.cooperative_id
    WHERE {ledger_scope}
      AND e.year = CAST(:year AS smallint)
      -- The same year by its bounds (the year is effective_at's in China): lets a
      -- village's few cooperatives use their (cooperative, effective_at) index.
      AND e.effective_at >= CAST(:year_start AS timestamptz)
      AND e.effective_at < CAST(:year_end AS timestamptz)
      AND e.currency = CAST(:currency AS char(3))
    GROUP BY s.village_code
),
paid AS (
    -- From the stores: a village's few look up their own fulfilments, a county's join.
    SELECT s.id AS cooperative_id
    FROM stores s
    WHERE EXISTS (
        SELECT 1
        FROM fulfilments f
        JOIN orders o ON o.id = f.order_id
        WHERE f.cooperative_id = s.id
          AND {fulfilment_scope}
          AND f.status <> 'cancelled'
          AND o.paid_at >= CAST(:window_start AS timestamptz)
          AND o.paid_at < CAST(:as_of AS timestamptz)
    )
),
store_counts AS (
    SELECT s.village_code,
           count(*) FILTER (WHERE s.created_at < CAST(:as_of AS timestamptz)) AS stores,
           count(p.cooperative_id) FILTER (WHERE s.created_at < CAST(:as_of AS timestamptz))
               AS active_stores
    FROM stores s
    LEFT JOIN paid p ON p.cooperative_id = s.id
    GROUP BY s.village_code
),
figures AS (
    SELECT v.code AS village_code,
           CAST(left(v.code, 6) || '000000' AS char(12)) AS county_code,
           v.name, v.urban, v.western,
           coalesce(v.household_count, c.file_cards, 0)::bigint AS households,
           CASE WHEN v.household_count IS NULL THEN 'file_cards' ELSE 'region' END
               AS households_source,
           coalesce(c.file_cards, 0)::bigint AS file_cards,
           coalesce(c.poor_households, 0)::bigint AS poor_households,
           coalesce(c.poor_persons, 0)::bigint AS poor_persons,
           v.rural_population,
           CASE WHEN v.western THEN CAST(:western_exit_bp AS bigint)
                ELSE CAST(:exit_bp AS bigint) END AS exit_threshold_bp,
           coalesce(sa.sales_fen, 0)::bigint AS sales_fen,
           coalesce(sc.stores, 0)::bigint AS stores,
           coalesce(sc.active_stores, 0)::bigint AS active_stores
    FROM village v
    LEFT JOIN cards c ON c.village_code = v.code
    LEFT JOIN sales sa ON sa.village_code = v.code
    LEFT JOIN store_counts sc ON sc.village_code = v.code
),
tests AS (
    SELECT f.*,
           f.sales_fen >= CAST(:sales_fen AS bigint) AS taobao_sales_passes,
           f.active_stores >= CAST(:active_stores AS bigint) AS taobao_active_stores_passes,
           -- No households known: no share to speak of, so the share cannot pass.
           f.households > 0 AND f.active_stores * 10000
               >= CAST(:store_share_bp AS bigint) * f.households AS taobao_store_share_passes
    FROM figures f
),
village_rows AS (
    SELECT t.village_code, t.county_code, t.name,
           CAST(:year AS integer) AS year, CAST(:as_of AS timestamptz) AS as_of,
           t.urban, t.western, t.households, t.households_source, t.file_cards,
           t.poor_households, t.poor_persons, t.rural_population,
           {incidence},
           t.sales_fen, t.stores, t.active_stores,
           CASE WHEN t.households > 0
                THEN floor(t.active_stores * 10000.0 / t.households)::bigint END
               AS active_store_share_bp,
           CAST(:sales_fen AS bigint) AS taobao_sales_threshold_fen,
           t.taobao_sales_passes,
           CAST(:active_stores AS bigint) AS taobao_active_stores_threshold,
           t.taobao_active_stores_passes,
           CAST(:store_share_bp AS bigint) AS taobao_store_share_threshold_bp,
           t.taobao_store_share_passes,
           NOT t.urban AND t.taobao_sales_passes
               AND (t.taobao_active_stores_passes OR t.taobao_store_share_passes)
               AS taobao_village,
           array_remove(ARRAY[
               CASE WHEN t.urban THEN 'urban' END,
               CASE WHEN NOT t.taobao_sales_passes THEN 'sales' END,
               CASE WHEN NOT (t.taobao_active_stores_passes OR t.taobao_store_share_passes)
                    THEN 'active_stores' END
           ]::text[], NULL) AS taobao_failing
    FROM tests t
)"""

# Incidence from `{p}.poor_persons`, `{p}.rural_population` and `{p}.exit_threshold_bp`.
# Exit is decided on the exact fraction; the basis points and percentage are rounded.
_INCIDENCE = """CASE WHEN {p}.rural_population > 0
                THEN round({p}.poor_persons * 10000.0 / {p}.rural_population)::bigint END
               AS incidence_bp,
           CASE WHEN {p}.rural_population > 0
                THEN round({p}.poor_persons * 100.0 / {p}.rural_population, 4) END
               AS incidence_percent,
           {p}.exit_threshold_bp,
           CASE WHEN {p}.rural_population > 0
                THEN {p}.poor_persons * 10000 < {p}.exit_threshold_bp * {p}.rural_population
           END AS passes_exit"""

_VILLAGE_SQL = """
WITH {villages}
SELECT {columns}
FROM village_rows
ORDER BY village_code
"""

_COUNTY_SQL = """
WITH {villages},
county AS (
    SELECT r.code, r.name, r.western, r.rural_population, r.household_count
    FROM regions r
    WHERE r.level = 'county'
      AND r.code BETWEEN CAST(:village_low AS char(12)) AND CAST(:village_high AS char(12))
),
by_county AS (
    SELECT vr.county_code,
           count(*) AS villages,
           sum(vr.households) AS households,
           sum(vr.file_cards) AS file_cards,
           sum(vr.poor_households) AS poor_households,
           sum(vr.poor_persons) AS poor_persons,
           sum(vr.rural_population) AS rural_population,
           count(*) FILTER (WHERE vr.rural_population IS NULL)
               AS villages_without_rural_population,
           count(*) FILTER (WHERE vr.taobao_village) AS taobao_villages,
           array_agg(vr.village_code::text ORDER BY vr.village_code)
               FILTER (WHERE vr.taobao_village) AS taobao_village_codes,
           sum(vr.sales_fen) AS sales_fen,
           sum(vr.stores) AS stores,
           sum(vr.active_stores) AS active_stores
    FROM village_rows vr
    GROUP BY vr.county_code
),
county_figures AS (
    SELECT c.code AS county_code, c.name, c.western,
           coalesce(c.household_count, b.households, 0)::bigint AS households,
           CASE WHEN c.household_count IS NULL THEN 'villages' ELSE 'region' END
               AS households_source,
           coalesce(b.file_cards, 0)::bigint AS file_cards,
           coalesce(b.poor_households, 0)::bigint AS poor_households,
           coalesce(b.poor_persons, 0)::bigint AS poor_persons,
           coalesce(c.rural_population, b.rural_population)::bigint AS rural_population,
           CASE WHEN c.rural_population IS NOT NULL THEN 'region'
                WHEN b.rural_population IS NOT NULL THEN 'villages' END
               AS rural_population_source,
           coalesce(b.villages_without_rural_population, 0)::bigint
               AS villages_without_rural_population,
           CASE WHEN c.western THEN CAST(:western_exit_bp AS bigint)
                ELSE CAST(:exit_bp AS bigint) END AS exit_threshold_bp,
           coalesce(b.villages, 0)::bigint AS villages,
           coalesce(b.taobao_villages, 0)::bigint AS taobao_villages,
           coalesce(b.taobao_village_codes, ARRAY[]::text[]) AS taobao_village_codes,
           coalesce(b.sales_fen, 0)::bigint AS sales_fen,
           coalesce(b.stores, 0)::bigint AS stores,
           coalesce(b.active_stores, 0)::bigint AS active_stores
    FROM county c
    LEFT JOIN by_county b ON b.county_code = c.code
)
SELECT cf.county_code, cf.name, CAST(:year AS integer) AS year,
       CAST(:as_of AS timestamptz) AS as_of, cf.western, cf.households, cf.households_source,
       cf.file_cards, cf.poor_households, cf.poor_persons, cf.rural_population,
       cf.rural_population_source, cf.villages_without_rural_population,
       {incidence},
       cf.villages, cf.taobao_villages, cf.taobao_village_codes, cf.sales_fen, cf.stores,
       cf.active_stores
FROM county_figures cf
ORDER BY cf.county_code
"""


def year_end(year: int) -> datetime:
    """The first moment after the assessment year (China's calendar year)."""
    return datetime(year + 1, 1, 1, tzinfo=CHINA)


def as_of(year: int, now: datetime) -> datetime:
    """The moment stores are counted at: the end of the year, or now while it runs."""
    return min(now, year_end(year))


def _params(scope: Scope, year: int, threshold: Threshold, now: datetime) -> dict[str, Any]:
    moment = as_of(year, now)
    return {
        **scope.params,
        "year": year,
        "year_start": year_end(year - 1),
        "year_end": year_end(year),
        "as_of": moment,
        "window_start": moment - ACTIVE_WINDOW,
        "currency": CURRENCY,
        "poor_statuses": list(POOR_STATUSES),
        "exit_bp": threshold.exit_incidence_bp,
        "western_exit_bp": threshold.western_exit_incidence_bp,
        "sales_fen": threshold.taobao_sales_yuan * 100,
        "active_stores": threshold.taobao_active_stores,
        "store_share_bp": threshold.taobao_store_share_bp,
    }


def _villages() -> str:
    return _VILLAGES.format(
        household_scope=sql_filter("h"),
        cooperative_scope=sql_filter("c"),
        ledger_scope=sql_filter("e", village_column=None),
        fulfilment_scope=sql_filter("f", village_column=None),
        incidence=_INCIDENCE.format(p="t"),
    )


def village_table_sql(scope: Scope, year: int, threshold: Threshold, now: datetime) -> TextClause:
    """One row per village inside the scope (any level), ordered by code: `VILLAGE_COLUMNS`."""
    sql = _VILLAGE_SQL.format(villages=_villages(), columns=", ".join(VILLAGE_COLUMNS))
    return text(sql).bindparams(**_params(scope, year, threshold, now))


def county_table_sql(scope: Scope, year: int, threshold: Threshold, now: datetime) -> TextClause:
    """One row per county inside the scope, ordered by code: `COUNTY_COLUMNS`.

    Counties inside a township or village scope: none.
    """
    sql = _COUNTY_SQL.format(villages=_villages(), incidence=_INCIDENCE.format(p="cf"))
    return text(sql).bindparams(**_params(scope, year, threshold, now))


@dataclass(frozen=True, slots=True)
class Indicators:
    """One region's row: `level` says whether `row` has VILLAGE_ or COUNTY_COLUMNS."""

    level: Level
    row: dict[str, Any]


async def region_indicators(
    session: AsyncSession, actor: User, code: str, year: int, *, now: datetime
) -> Indicators:
    """The indicators of one village or county for a year (officers of its county, admins)."""
    level = level_of(code, field="code")
    if level not in (Level.village, Level.county):
        raise Invalid(
            f"Region {code} is a {level.value}: indicators are given for a village or a county.",
            field="code",
        )
    scope = await scope_of(session, actor, code)
    ensure_begun(year, now)
    threshold = await thresholds_for(session, year)
    make = village_table_sql if level is Level.village else county_table_sql
    row = (await session.execute(make(scope, year, threshold, now))).one()
    return Indicators(level, dict(row._mapping))
