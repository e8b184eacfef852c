"""Assessment exports: a household-year CSV of a whole province, end to end, beside COPY.

The issue's figure: with 1,000,000 households and 10,000,000 ledger entries, the
household-year CSV export through the live server (`POST /v1/exports`, the job,
`GET /v1/exports/{id}/download`) in at most twice the time PostgreSQL itself takes
to aggregate and `COPY (…) TO STDOUT` the same table, measured in the same run,
with flat memory.

The group works on a database of its own (`marketplace_bench_exports`), so that
its ten million entries neither slow the other groups down nor enter the ledger
group's sums. On it: the fictional regions, cooperatives, products and buyers of
`bench/datagen.py` (100 cooperatives a county, one county per 100,000
households), then, written in SQL (`INSERT … SELECT` from `generate_series`, in
one transaction, ids derived from the seed so the same seed gives the same
rows):

- households spread over every village, each with 1 to 6 members and the five
  guarantee indicators (about one in twenty false each), in a mix of statuses;
- other income (wages, transfers, business takings and production costs) for
  about half the households in each year;
- delivered, paid, recognised cash-on-delivery orders of one line each (one
  line per 500 entries, at most 20,000), all in the counties' own products;
- the ledger entries, half over the previous assessment year and half over
  this one so far, in time order: each a household's part (nine in ten; the
  rest the selling cooperative's own) of a line of the household's county. The
  lines' share snapshots are left empty: entries are spread over far more
  households than a line has suppliers, and the export reads the entries only;
- one flag in 500 entries (self-dealing, open, excluded or ruled counted)
  holding that entry's line for its household, so the export's anti-join of held
  income has work to do;
- thresholds for both years (the latest year's carried forward when missing),
  and an admin account for the bench's token.

Foreign-key triggers are skipped while loading (`session_replication_role =
replica`, which needs a superuser) and the ledger's secondary indexes are built
after its rows, as a restore does; then every reference is checked in one pass
per table, and the tables are vacuumed and analysed.

Then: PostgreSQL's own time for `COPY (<the export's SQL>) TO STDOUT WITH
(FORMAT csv, HEADER)` read to nowhere, before and after the export; the export
through the server, with the resident memory of every server process (and of
a separate job worker with `--no-worker`) sampled throughout; and the download,
hashed and counted, checked against the manifest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from argon2 import PasswordHasher

from bench import datagen
from bench.db import connect, create_database, drop_database
from bench.server import running_server
from services.assessment.scope import scope_of
from services.assessment.thresholds import thresholds_for
from services.db import create_engine, session_factory
from services.exports import sources
from services.exports.models import ExportTable
from services.exports.runner import positional
from services.ledger.service import CHINA
from services.schema import upgrade
from services.users.models import User
from services.users.tokens import issue_token

GROUPS = ("exports",)
DATABASE = "marketplace_bench_exports"
DEFAULT_HOUSEHOLDS = 1_000_000
DEFAULT_ENTRIES = 10_000_000
# The issue's target: the export end to end in at most twice PostgreSQL's COPY.
TARGET_RATIO = 2.0
HOUSEHOLDS_PER_COUNTY = 100_000
MOST_COUNTIES = 20
PRODUCTS_PER_COOPERATIVE = 2
BUYERS = 500
ENTRIES_PER_LINE = 500
MOST_LINES = 20_000
FLAG_EVERY = 500
ADMIN_EMAIL = "export-admin@bench.example.invalid"
POLL_S = 0.25
SAMPLE_S = 0.1
EXPORT_TIMEOUT_S = 3600.0
# A job not started by then is not going to be: no worker runs export jobs.
QUEUE_TIMEOUT_S = 120.0
REPOSITORY = Path(__file__).resolve().parent.parent

# Deterministic draws: the seed is baked into the function when it is created.
_DRAW = """
CREATE FUNCTION pg_temp.draw(n bigint, salt int, m bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS 'SELECT ((hashint8extended(n, SEED * 1000 + salt) % m) + m) % m'
"""
# Ids from the seed, so the same seed writes the same rows (and the same file).
_ID = """
CREATE FUNCTION pg_temp.id(kind text, n bigint) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS 'SELECT md5(''SEED:'' || kind || '':'' || n::text)::uuid'
"""

# The ledger entries, by serial n; formatted with a filter for the flagged ones.
_ENTRIES = """
SELECT e.n, CASE WHEN pg_temp.draw(e.n, 41, 10) = 0 THEN NULL ELSE h.id END AS household_id,
       l.id AS line_id, l.order_id, l.fulfilment_id, l.product_id, l.cooperative_id,
       l.county_code, l.buyer_id,
       CASE WHEN e.first THEN cfg.year - 1 ELSE cfg.year END::smallint AS year,
       CASE WHEN e.first
            THEN cfg.previous_start + (cfg.year_start - cfg.previous_start)
                 * ((e.n - 0.5) / cfg.half)::float8
            ELSE cfg.year_start + (cfg.now - cfg.year_start)
                 * ((e.n - cfg.half - 0.5) / (cfg.entries - cfg.half))::float8
       END AS effective_at,
       2000 + 100 * pg_temp.draw(e.n, 42, 3981) AS amount_fen
FROM (SELECT n, n <= cfg.half AS first FROM ex_cfg cfg, generate_series(1, cfg.entries) AS n
      {where}) e
CROSS JOIN ex_cfg cfg
JOIN ex_homes h ON h.s = 1 + pg_temp.draw(e.n, 40, cfg.households)
JOIN ex_lines l ON l.county_no = h.county_no
 AND l.rank = pg_temp.draw(e.n, 43, cfg.lines_per_county)
"""

# Where the ledger's secondary indexes are built again, in the sequence below.
_INDEXES_BACK = "-- the ledger's indexes"

_LOAD = (
    """
    CREATE TEMP TABLE ex_cfg ON COMMIT DROP AS
    SELECT $1::int AS households, $2::bigint AS entries, $2::bigint / 2 AS half,
           $3::int AS lines_per_county, $4::int AS year, $5::timestamptz AS previous_start,
           $6::timestamptz AS year_start, $7::timestamptz AS now, $8::text AS surnames,
           $9::text AS given, $10::int AS flag_every,
           (SELECT count(*) FROM regions WHERE level = 'county')::int AS counties
    """,
    "ANALYZE ex_cfg",
    # Villages numbered across the province; counties numbered from 0.
    """
    CREATE TEMP TABLE ex_villages ON COMMIT DROP AS
    SELECT v.code, c.code AS county_code, t.name AS township, v.name AS village,
           (dense_rank() OVER (ORDER BY c.code) - 1)::int AS county_no,
           (row_number() OVER (ORDER BY v.code) - 1)::int AS ord
    FROM regions v JOIN regions t ON t.code = v.parent_code
    JOIN regions c ON c.code = t.parent_code
    WHERE v.level = 'village'
    """,
    """
    CREATE TEMP TABLE ex_homes ON COMMIT DROP AS
    SELECT s, pg_temp.id('household', s) AS id, v.code AS village_code, v.county_code,
           v.county_no, v.township || v.village || ' ' || (1 + pg_temp.draw(s, 2, 9)) || ' 组'
               AS address,
           1 + pg_temp.draw(s, 3, 6)::int AS size
    FROM ex_cfg cfg, generate_series(1, cfg.households) AS s
    JOIN ex_villages v ON v.ord = pg_temp.draw(s, 1, (SELECT count(*) FROM ex_villages))
    """,
    "CREATE INDEX ON ex_homes (s)",
    "ANALYZE ex_homes",
    """
    INSERT INTO households (id, county_code, village_code, address, phone, poor,
                            household_type, standard, main_cause, registration_year, status,
                            food_clothing, compulsory_education, basic_medical, safe_housing,
                            safe_drinking_water)
    SELECT id, county_code, village_code, address, '1370' || lpad(s::text, 7, '0'),
           pg_temp.draw(s, 4, 10) < 8,
           (ARRAY['ordinary','ordinary','ordinary','minimum_living','allowance_poor',
                  'five_guarantee'])[1 + pg_temp.draw(s, 5, 6)],
           CASE WHEN pg_temp.draw(s, 6, 10) < 8 THEN 'national' ELSE 'provincial' END,
           (ARRAY['illness','disability','education','disaster','land','water','technology',
                  'labour','funds','transport','motivation','other'])[1 + pg_temp.draw(s, 7, 12)],
           2014 + pg_temp.draw(s, 8, 6),
           (ARRAY['registered','registered','exited','exited','exited','monitored',
                  'returned','exit_proposed'])[1 + pg_temp.draw(s, 9, 8)],
           pg_temp.draw(s, 10, 20) > 0, pg_temp.draw(s, 11, 20) > 0,
           pg_temp.draw(s, 12, 20) > 0, pg_temp.draw(s, 13, 20) > 0,
           pg_temp.draw(s, 14, 20) > 0
    FROM ex_homes
    """,
    """
    INSERT INTO household_members (id, household_id, position, name, birth_year, sex, relation,
                                   education, in_school, health, labour, migrant_work_months,
                                   medical_insurance, pension_insurance, allowance)
    SELECT pg_temp.id('member', x), h.id, m - 1,
           substr(cfg.surnames, 1 + pg_temp.draw(h.s, 20, length(cfg.surnames))::int, 1)
               || substr(cfg.given, 1 + pg_temp.draw(x, 21, length(cfg.given))::int, 1)
               || CASE WHEN pg_temp.draw(x, 22, 3) > 0
                       THEN substr(cfg.given, 1 + pg_temp.draw(x, 23, length(cfg.given))::int, 1)
                       ELSE '' END,
           CASE WHEN m <= 2 THEN 1950 + pg_temp.draw(h.s, 24, 30)
                ELSE 1980 + pg_temp.draw(x, 25, 40) END,
           CASE WHEN m = 1 THEN 'male' WHEN m = 2 THEN 'female'
                WHEN pg_temp.draw(x, 26, 2) = 0 THEN 'male' ELSE 'female' END,
           CASE WHEN m = 1 THEN 'head' WHEN m = 2 THEN 'spouse'
                ELSE (ARRAY['child','child','parent','grandchild'])[1 + pg_temp.draw(x, 27, 4)]
           END,
           (ARRAY['none','primary','junior_secondary','junior_secondary','senior_secondary',
                  'vocational'])[1 + pg_temp.draw(x, 28, 6)],
           false,
           (ARRAY['healthy','healthy','healthy','chronic_illness','serious_illness',
                  'disabled'])[1 + pg_temp.draw(x, 29, 6)],
           (ARRAY['ordinary','ordinary','skilled','lost','none'])[1 + pg_temp.draw(x, 30, 5)],
           pg_temp.draw(x, 31, 13), true, pg_temp.draw(x, 32, 2) = 0,
           pg_temp.draw(x, 33, 10) = 0
    FROM ex_homes h, ex_cfg cfg,
         LATERAL generate_series(1, h.size) AS m,
         LATERAL (SELECT h.s * 8 + m AS x) AS member
    """,
    # Other income: per household and year, each kind with its own odds.
    """
    INSERT INTO household_incomes (household_id, county_code, year, kind, amount_fen, currency,
                                   note, recorded_at)
    SELECT h.id, h.county_code, y.year, k.kind,
           k.low + 100 * pg_temp.draw(h.s * 16 + y.i * 8 + k.i, 51, k.span), 'CNY', NULL,
           LEAST(cfg.now, make_timestamptz(y.year, 12, 20, 12, 0, 0, 'Asia/Shanghai'))
    FROM ex_homes h, ex_cfg cfg,
         LATERAL (VALUES (0, cfg.year - 1), (1, cfg.year)) AS y(i, year),
         LATERAL (VALUES (0, 'wage', 45, 300000, 15000),
                         (1, 'transfer', 15, 50000, 3000),
                         (2, 'operating', 10, 100000, 8000),
                         (3, 'production_cost', 10, 20000, 2000)) AS k(i, kind, odds, low, span)
    WHERE pg_temp.draw(h.s * 16 + y.i * 8 + k.i, 50, 100) < k.odds
    """,
    # One line per order, in the products of each county, spread over the previous year.
    """
    CREATE TEMP TABLE ex_products ON COMMIT DROP AS
    SELECT p.id, p.cooperative_id, p.county_code, p.title, p.unit, p.price_fen,
           v.county_no,
           (row_number() OVER (PARTITION BY p.county_code ORDER BY p.id) - 1)::int AS rank,
           count(*) OVER (PARTITION BY p.county_code)::int AS in_county
    FROM products p JOIN (SELECT DISTINCT county_code, county_no FROM ex_villages) v
      ON v.county_code = p.county_code
    """,
    """
    CREATE TEMP TABLE ex_lines ON COMMIT DROP AS
    WITH j AS (
        SELECT j, j % cfg.counties AS county_no, j / cfg.counties AS rank,
               cfg.previous_start + (cfg.year_start - cfg.previous_start)
                   * ((j + 0.5) / (cfg.lines_per_county * cfg.counties))::float8 AS paid_at
        FROM ex_cfg cfg, generate_series(0, cfg.lines_per_county * cfg.counties - 1) AS j
    ), n AS (
        SELECT county_no, min(in_county) AS products FROM ex_products GROUP BY county_no
    ), b AS (
        SELECT id, row_number() OVER (ORDER BY email) - 1 AS ord, count(*) OVER () AS buyers
        FROM users WHERE role = 'buyer'
    )
    SELECT j.j, j.county_no, j.rank, pg_temp.id('line', j.j) AS id,
           pg_temp.id('order', j.j) AS order_id, pg_temp.id('fulfilment', j.j) AS fulfilment_id,
           p.id AS product_id, p.cooperative_id, p.county_code, p.title, p.unit, p.price_fen,
           1 + pg_temp.draw(j.j, 60, 3) AS quantity, b.id AS buyer_id, j.paid_at
    FROM j JOIN n ON n.county_no = j.county_no
    JOIN ex_products p ON p.county_no = j.county_no AND p.rank = pg_temp.draw(j.j, 61, n.products)
    JOIN b ON b.ord = pg_temp.draw(j.j, 62, b.buyers)
    """,
    "CREATE INDEX ON ex_lines (county_no, rank)",
    "ANALYZE ex_lines",
    """
    INSERT INTO orders (id, buyer_id, status, payment_method, payment_status, currency,
                        items_fen, fee_fen, total_fen, paid_fen, refunded_fen, delivery_type,
                        delivery_address, settlement_hold, paid_at, created_at, updated_at)
    SELECT order_id, buyer_id, 'delivered', 'cod', 'paid', 'CNY', price_fen * quantity,
           price_fen * quantity * 5 / 100, price_fen * quantity, price_fen * quantity, 0, 'home',
           jsonb_build_object('recipient', '收货人', 'phone', '13800000000', 'province', '虚构省',
                              'street', '示范路 1 号'),
           false, paid_at, paid_at - interval '3 days', paid_at
    FROM ex_lines ORDER BY j
    """,
    """
    INSERT INTO fulfilments (id, order_id, cooperative_id, county_code, status, items_fen,
                             delivered_at, recognised_at, created_at, updated_at)
    SELECT fulfilment_id, order_id, cooperative_id, county_code, 'delivered',
           price_fen * quantity, paid_at, paid_at, paid_at - interval '3 days', paid_at
    FROM ex_lines ORDER BY j
    """,
    """
    INSERT INTO order_lines (id, order_id, fulfilment_id, position, product_id, cooperative_id,
                             county_code, title, unit, unit_price_fen, quantity, gross_fen,
                             certified, fee_bp, fee_fen, share_set_id, shares, shares_at)
    SELECT id, order_id, fulfilment_id, 0, product_id, cooperative_id, county_code, title, unit,
           price_fen, quantity, price_fen * quantity, false, 500,
           price_fen * quantity * 5 / 100, NULL, '[]'::jsonb, paid_at
    FROM ex_lines ORDER BY j
    """,
    # Recognised already: the ledger's periodic backlog sweep finds nothing to do.
    """
    INSERT INTO ledger_recognitions (fulfilment_id, order_id, county_code, recognised_at, lines)
    SELECT fulfilment_id, order_id, county_code, paid_at, 1 FROM ex_lines ORDER BY j
    """,
    """
    INSERT INTO ledger_entries (line_id, order_id, fulfilment_id, product_id, cooperative_id,
                                county_code, buyer_id, household_id, kind, amount_fen, currency,
                                year, effective_at, refund_id, created_at)
    SELECT line_id, order_id, fulfilment_id, product_id, cooperative_id, county_code, buyer_id,
           household_id, 'recognition', amount_fen, 'CNY', year, effective_at, NULL, effective_at
    FROM ({entries}) e
    """,
    _INDEXES_BACK,
    # Flags holding the part of one entry in FLAG_EVERY: its line, for its household.
    """
    CREATE TEMP TABLE ex_flagged ON COMMIT DROP AS
    SELECT e.*, pg_temp.id('flag', e.n) AS flag_id,
           (ARRAY['open','open','excluded','counted'])[1 + pg_temp.draw(e.n, 70, 4)] AS status
    FROM ({flagged}) e WHERE e.household_id IS NOT NULL
    """,
    """
    INSERT INTO attribution_flags (id, county_code, rule, status, dedupe_key, order_id, buyer_id,
                                   household_id, cooperative_id, year, detail, ruled_at,
                                   ruling_reason, created_at, updated_at)
    SELECT flag_id, county_code, 'supplier_household', status, 'bench-export:' || n, order_id,
           buyer_id, household_id, cooperative_id, year,
           jsonb_build_object('line_ids', jsonb_build_array(line_id::text)),
           CASE WHEN status <> 'open' THEN effective_at + interval '7 days' END,
           CASE WHEN status = 'excluded' THEN 'the buyer is a member of the household'
                WHEN status = 'counted' THEN 'an ordinary sale to a neighbour' END,
           effective_at, effective_at
    FROM ex_flagged ORDER BY n
    """,
    """
    INSERT INTO attribution_flag_lines (flag_id, line_id, household_id)
    SELECT flag_id, line_id, household_id FROM ex_flagged ORDER BY n
    """,
    # Thresholds for both years: the latest year's figures carried forward where missing.
    """
    INSERT INTO assessment_thresholds (year, poverty_line_yuan, monitoring_line_yuan,
                                       income_drop_bp, exit_incidence_bp,
                                       western_exit_incidence_bp, taobao_sales_yuan,
                                       taobao_active_stores, taobao_store_share_bp, source)
    SELECT y.year, t.poverty_line_yuan, t.monitoring_line_yuan, t.income_drop_bp,
           t.exit_incidence_bp, t.western_exit_incidence_bp, t.taobao_sales_yuan,
           t.taobao_active_stores, t.taobao_store_share_bp,
           'bench: the figures of ' || t.year || ' carried forward'
    FROM ex_cfg cfg, LATERAL (VALUES (cfg.year - 1), (cfg.year)) AS y(year),
         LATERAL (SELECT * FROM assessment_thresholds ORDER BY year DESC LIMIT 1) t
    ON CONFLICT (year) DO NOTHING
    """,
)

_SUMMARY = """
SELECT (SELECT count(*) FROM households) AS households,
       (SELECT count(*) FROM household_members) AS members,
       (SELECT count(*) FROM household_incomes) AS other_incomes,
       (SELECT count(*) FROM order_lines) AS lines,
       (SELECT count(*) FROM ledger_entries) AS entries,
       (SELECT count(*) FROM ledger_entries WHERE household_id IS NOT NULL) AS household_entries,
       (SELECT count(*) FROM attribution_flags) AS flags,
       (SELECT count(*) FROM attribution_flags WHERE status <> 'counted') AS flags_holding,
       (SELECT count(*) FROM regions WHERE level = 'county') AS counties,
       (SELECT count(*) FROM regions WHERE level = 'village') AS villages
"""

# Every reference the loading skipped the triggers of, one pass per table; each
# figure must be 0.
_REFERENCES = {
    "entries without their household": """
        SELECT count(*) FROM ledger_entries e
        WHERE e.household_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM households h WHERE h.id = e.household_id)
    """,
    "entries whose line, order, fulfilment, product, cooperative or buyer is missing": """
        WITH t AS (
            SELECT DISTINCT line_id, order_id, fulfilment_id, product_id, cooperative_id,
                   buyer_id, county_code
            FROM ledger_entries
        )
        SELECT count(*) FROM t
        LEFT JOIN order_lines l ON l.id = t.line_id AND l.order_id = t.order_id
             AND l.fulfilment_id = t.fulfilment_id AND l.product_id = t.product_id
             AND l.cooperative_id = t.cooperative_id AND l.county_code = t.county_code
        LEFT JOIN orders o ON o.id = t.order_id AND o.buyer_id = t.buyer_id
        LEFT JOIN fulfilments f ON f.id = t.fulfilment_id
        LEFT JOIN products p ON p.id = t.product_id
        LEFT JOIN cooperatives c ON c.id = t.cooperative_id
        LEFT JOIN users u ON u.id = t.buyer_id
        WHERE l.id IS NULL OR o.id IS NULL OR f.id IS NULL OR p.id IS NULL OR c.id IS NULL
           OR u.id IS NULL
    """,
    "entries outside their household's county": """
        SELECT count(*) FROM ledger_entries e JOIN households h ON h.id = e.household_id
        WHERE h.county_code <> e.county_code
    """,
    "members without their household": """
        SELECT count(*) FROM household_members m
        WHERE NOT EXISTS (SELECT 1 FROM households h WHERE h.id = m.household_id)
    """,
    "incomes without their household": """
        SELECT count(*) FROM household_incomes i
        WHERE NOT EXISTS (SELECT 1 FROM households h WHERE h.id = i.household_id)
    """,
    "households in no village": """
        SELECT count(*) FROM households h
        WHERE NOT EXISTS (SELECT 1 FROM regions r WHERE r.code = h.village_code)
    """,
    "flag lines whose flag, line or household is missing": """
        SELECT count(*) FROM attribution_flag_lines fl
        LEFT JOIN attribution_flags f ON f.id = fl.flag_id
        LEFT JOIN order_lines l ON l.id = fl.line_id
        LEFT JOIN households h ON h.id = fl.household_id
        WHERE f.id IS NULL OR l.id IS NULL OR h.id IS NULL
    """,
    "lines whose order, fulfilment or product is missing": """
        SELECT count(*) FROM order_lines l
        LEFT JOIN orders o ON o.id = l.order_id
        LEFT JOIN fulfilments f ON f.id = l.fulfilment_id AND f.order_id = l.order_id
        LEFT JOIN products p ON p.id = l.product_id
        WHERE o.id IS NULL OR f.id IS NULL OR p.id IS NULL
    """,
}
TABLES = (
    "households, household_members, household_incomes, orders, fulfilments, order_lines, "
    "ledger_recognitions, ledger_entries, attribution_flags, attribution_flag_lines, "
    "assessment_thresholds, users"
)


@dataclass(frozen=True, slots=True)
class Plan:
    households: int
    entries: int
    seed: int

    @property
    def counties(self) -> int:
        return min(MOST_COUNTIES, max(2, math.ceil(self.households / HOUSEHOLDS_PER_COUNTY)))

    @property
    def lines_per_county(self) -> int:
        lines = min(MOST_LINES, max(self.counties, self.entries // ENTRIES_PER_LINE))
        return max(1, lines // self.counties)


def assessment_years(now: datetime) -> tuple[int, datetime, datetime]:
    """This assessment year (China's calendar year), its start and the previous year's."""
    year = now.astimezone(CHINA).year
    return year, datetime(year - 1, 1, 1, tzinfo=CHINA), datetime(year, 1, 1, tzinfo=CHINA)


def _step_name(statement: str) -> str:
    words = statement.split()
    for keyword, width in (("INSERT", 3), ("CREATE", 4), ("ANALYZE", 2)):
        if words and words[0] == keyword:
            return " ".join(words[:width])
    return " ".join(words[:3])


async def load(url: str, plan: Plan, *, now: datetime, jobs: int) -> dict[str, Any]:
    """Fill the migrated, empty database `url`; answer what it holds and how long it took."""
    if plan.households < 1 or plan.entries < 2:
        raise ValueError("at least one household and two ledger entries")
    started = time.perf_counter()
    base = await datagen.generate(
        url,
        products_count=plan.counties * datagen.COOPERATIVES_PER_COUNTY * PRODUCTS_PER_COOPERATIVE,
        cooperatives_count=plan.counties * datagen.COOPERATIVES_PER_COUNTY,
        seed=plan.seed,
        jobs=jobs,
        buyers_count=BUYERS,
        checkout_products=0,
        shipments_count=0,
    )
    steps: dict[str, float] = {"catalogue (bench.datagen)": time.perf_counter() - started}
    year, previous_start, year_start = assessment_years(now)
    conn = await connect(url)
    try:
        await conn.execute("SET temp_buffers = '512MB'")
        await conn.execute(_DRAW.replace("SEED", str(int(plan.seed))))
        await conn.execute(_ID.replace("SEED", str(int(plan.seed))))
        write_started = time.perf_counter()
        async with conn.transaction():
            # Foreign keys are triggers: skipped here, every reference checked below.
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("SET LOCAL work_mem = '256MB'")
            await conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
            await conn.execute(
                _LOAD[0],
                plan.households,
                plan.entries,
                plan.lines_per_county,
                year,
                previous_start,
                year_start,
                now,
                datagen.SURNAMES,
                datagen.GIVEN,
                FLAG_EVERY,
            )
            # The ledger's secondary indexes are built once after its rows, as a restore
            # does: maintained row by row they would cost most of the load.
            indexes = await conn.fetch(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i "
                "WHERE i.schemaname = current_schema() AND i.tablename = 'ledger_entries' "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
            )
            for index in indexes:
                await conn.execute(f'DROP INDEX "{index["indexname"]}"')
            for statement in _LOAD[1:]:
                if statement is _INDEXES_BACK:
                    step = time.perf_counter()
                    for index in indexes:
                        await conn.execute(index["indexdef"])
                    steps["CREATE INDEX ledger_entries"] = time.perf_counter() - step
                    continue
                step = time.perf_counter()
                await conn.execute(
                    statement.format(
                        entries=_ENTRIES.format(where=""),
                        flagged=_ENTRIES.format(where="WHERE n % cfg.flag_every = 0"),
                    )
                )
                name = _step_name(statement)
                steps[name] = steps.get(name, 0.0) + time.perf_counter() - step
            await conn.execute(
                "INSERT INTO users (id, email, password_hash, role, display_name, is_active) "
                "VALUES ($1, $2, $3, 'admin', 'Export benchmark', true)",
                uuid.uuid5(uuid.NAMESPACE_URL, f"bench-exports:{plan.seed}:admin"),
                ADMIN_EMAIL,
                # Nobody logs in with it: the bench signs the admin's token itself.
                PasswordHasher().hash(secrets.token_urlsafe(24)),
            )
        write_s = time.perf_counter() - write_started
        step = time.perf_counter()
        problems = {name: int(await conn.fetchval(sql)) for name, sql in _REFERENCES.items()}
        steps["reference checks"] = time.perf_counter() - step
        if any(problems.values()):
            raise RuntimeError(f"the generated data breaks references: {problems}")
        step = time.perf_counter()
        await conn.execute(f"VACUUM (ANALYZE) {TABLES}")
        steps["VACUUM (ANALYZE)"] = time.perf_counter() - step
        step = time.perf_counter()
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
        steps["CHECKPOINT"] = time.perf_counter() - step
        summary: dict[str, Any] = {
            k: int(v) for k, v in (await conn.fetchrow(_SUMMARY) or {}).items()
        }
        if summary["entries"] != plan.entries or summary["households"] != plan.households:
            raise RuntimeError(
                f"{summary['households']} households and {summary['entries']} entries written "
                f"of {plan.households} and {plan.entries}: a county without products?"
            )
        summary["bytes"] = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        summary["ledger_bytes"] = int(
            await conn.fetchval("SELECT pg_total_relation_size('ledger_entries')")
        )
    finally:
        await conn.close()
    return summary | {
        "year": year,
        "province": datagen.PROVINCE.ljust(12, "0"),
        "cooperatives": base.cooperatives,
        "products": base.products,
        "buyers": base.buyers,
        "references_checked": list(_REFERENCES),
        "write_s": round(write_s, 1),
        "load_s": round(time.perf_counter() - started, 1),
        "steps_s": {
            name: round(seconds, 1)
            for name, seconds in sorted(steps.items(), key=lambda item: -item[1])
            if seconds >= 0.05
        },
    }


async def prepare(
    server_url: str, plan: Plan, *, now: datetime, jobs: int
) -> tuple[str, dict[str, Any]]:
    """Create and migrate the group's own database, then load it."""
    url = await create_database(server_url, DATABASE)
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    return url, await load(url, plan, now=now, jobs=jobs) | {"database": DATABASE}


def admin_id(seed: int) -> uuid.UUID:
    """The loaded admin account's id (from the seed, as the rest of the data)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"bench-exports:{seed}:admin")


# --- PostgreSQL's own COPY ------------------------------------------------------------------


async def export_sql(
    url: str, seed: int, region: str, year: int, key: bytes
) -> tuple[str, list[Any]]:
    """The statement the CSV export COPYs, with its arguments, built as the job builds it.

    `services.exports.runner` asks the assessment area for the household-year rows
    of the requester's scope, pseudonymises them (`services.exports.sources`) and
    flattens them for CSV after preparing the statement to learn its column types;
    so does this, with the admin the export runs for and the server's pseudonym key.
    """
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with session_factory(engine)() as session:
            actor = await session.get(User, admin_id(seed))
            if actor is None:
                raise RuntimeError("the exports database has no bench admin")
            scope = await scope_of(session, actor, region)
            threshold = await thresholds_for(session, year)
            statement = sources.export_statement(
                ExportTable.household_year,
                scope,
                year,
                threshold,
                now=datetime.now(UTC),
                include_names=False,
                key=key,
            )
            sql, _ = positional(statement, engine.dialect)
            raw = (await (await session.connection()).get_raw_connection()).driver_connection
            assert raw is not None
            prepared = await raw.prepare(sql)
            types = [(a.name, a.type.name, a.type.kind) for a in prepared.get_attributes()]
            return positional(sources.flat_statement(statement, types), engine.dialect)
    finally:
        await engine.dispose()


@dataclass(frozen=True, slots=True)
class Copied:
    seconds: float
    rows: int
    bytes: int
    sha256: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "rows": self.rows,
            "bytes": self.bytes,
            "rows_per_s": round(self.rows / self.seconds, 1) if self.seconds else None,
        }


async def copy_out(url: str, sql: str, args: list[Any], *, digest: bool = False) -> Copied:
    """`COPY (sql) TO STDOUT WITH (FORMAT csv, HEADER)`, the data counted and dropped.

    The bytes are hashed only when asked (the unmeasured warm-up run), to show the
    file PostgreSQL writes is the export's own; measured runs only count them.
    """
    conn = await connect(url)
    try:
        size = 0
        hashed = hashlib.sha256() if digest else None

        async def drop(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if hashed is not None:
                hashed.update(data)

        started = time.perf_counter()
        status = await conn.copy_from_query(sql, *args, output=drop, format="csv", header=True)
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    rows = int(str(status).rsplit(" ", 1)[-1])
    return Copied(seconds, rows, size, hashed.hexdigest() if hashed else None)


async def explain(url: str, sql: str, args: list[Any]) -> str:
    conn = await connect(url)
    try:
        rows = await conn.fetch(f"EXPLAIN {sql}", *args)
    finally:
        await conn.close()
    return "\n".join(row[0] for row in rows)


# --- the server's memory ----------------------------------------------------------------------


def _status_kb(pid: int, *keys: str) -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in keys:
                    found[key] = int(value.split()[0])
    except OSError:
        return {}
    return found


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            data = handle.read()
    except OSError:
        return 0
    fields = data[data.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            data = handle.read()
    except OSError:
        return None
    return int(data[data.rindex(")") + 2 :].split()[1])


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def server_processes(port: int) -> dict[int, str]:
    """The `marketplace serve` process on `port` and its descendants, each with its role."""
    pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    root = next(
        (
            pid
            for pid in pids
            if "serve" in (line := _cmdline(pid))
            and "--port" in line
            and line[line.index("--port") + 1 : line.index("--port") + 2] == [str(port)]
        ),
        None,
    )
    if root is None:
        raise RuntimeError(f"no server process listens on port {port}")
    found = {root: "server"}
    grew = True
    while grew:
        grew = False
        for pid in pids:
            if pid not in found and _parent(pid) in found:
                command = " ".join(_cmdline(pid))
                found[pid] = (
                    "resource tracker"
                    if "resource_tracker" in command
                    else "api worker"
                    if "spawn_main" in command
                    else "child"
                )
                grew = True
    if len(found) > 1:
        found[root] = "supervisor"
    return found


class Memory(threading.Thread):
    """Resident memory of each process, every SAMPLE_S, attributed to the current phase."""

    def __init__(self, processes: dict[int, str]) -> None:
        super().__init__(daemon=True)
        self.processes = dict(processes)
        self.phase = "before"
        self.stopped = threading.Event()
        self.started = time.monotonic()
        self.peaks: dict[tuple[int, str], float] = {}
        self.last: dict[int, float] = {}
        self.before: dict[int, float] = {}
        self.totals: list[tuple[float, float]] = []  # (seconds, MB of all processes)
        self.ticks_before = {pid: _cpu_ticks(pid) for pid in self.processes}
        self.ticks_after: dict[int, int] = {}
        self.high_water: dict[int, int] = {}

    def sample(self) -> None:
        total = 0.0
        for pid in self.processes:
            rss = _status_kb(pid, "VmRSS").get("VmRSS")
            if rss is None:
                continue
            mb = rss / 1024
            total += mb
            self.last[pid] = mb
            key = (pid, self.phase)
            self.peaks[key] = max(self.peaks.get(key, 0.0), mb)
        self.totals.append((time.monotonic() - self.started, total))

    def mark(self, phase: str) -> None:
        self.sample()
        if self.phase == "before":
            self.before = dict(self.last)
        self.phase = phase

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_S):
            self.sample()

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.sample()
        self.ticks_after = {pid: _cpu_ticks(pid) for pid in self.processes}
        # The kernel's high-water mark since each process started, read while it runs.
        for pid in self.processes:
            if hwm := _status_kb(pid, "VmHWM").get("VmHWM"):
                self.high_water[pid] = hwm

    def report(self) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        for pid, role in self.processes.items():
            hwm = self.high_water.get(pid)
            rows.append(
                {
                    "pid": pid,
                    "role": role,
                    "before_mb": round(self.before.get(pid, 0.0), 1),
                    "peak_export_mb": round(self.peaks.get((pid, "export"), 0.0), 1),
                    "peak_download_mb": round(self.peaks.get((pid, "download"), 0.0), 1),
                    "after_mb": round(self.last.get(pid, 0.0), 1),
                    "high_water_mb": round(hwm / 1024, 1) if hwm else None,
                    "cpu_s": round(
                        (self.ticks_after.get(pid, 0) - self.ticks_before.get(pid, 0))
                        / os.sysconf("SC_CLK_TCK"),
                        2,
                    ),
                }
            )
        growth = max(
            (max(r["peak_export_mb"], r["peak_download_mb"]) - r["before_mb"] for r in rows),
            default=0.0,
        )
        return {
            "sample_s": SAMPLE_S,
            "processes": rows,
            "most_growth_mb": round(growth, 1),
            "total_mb_samples": _thin([(round(t, 1), round(mb, 1)) for t, mb in self.totals]),
        }


def _thin(points: list[Any], most: int = 60) -> list[Any]:
    """At most `most` points, evenly spread, the last one kept."""
    if len(points) <= most:
        return points
    step = len(points) / most
    return [points[int(i * step)] for i in range(most - 1)] + [points[-1]]


# --- through the server -----------------------------------------------------------------------


@dataclass(slots=True)
class ApiRun:
    export: dict[str, Any]
    done_s: float
    running_s: float | None
    progress: list[tuple[float, int]] = field(default_factory=list)
    download_s: float = 0.0
    downloaded_bytes: int = 0
    downloaded_lines: int = 0
    downloaded_sha256: str = ""
    etag: str | None = None


async def through_the_api(
    base_url: str, token: str, body: dict[str, Any], memory: Memory
) -> ApiRun:
    """POST the export, poll it until done, then download the file, hashing it."""
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120
    ) as client:
        memory.mark("export")
        started = time.perf_counter()
        response = await client.post("/v1/exports", json=body)
        if response.status_code != 202:
            raise RuntimeError(f"POST /v1/exports answered {response.status_code}: {response.text}")
        export = response.json()
        run = ApiRun(export=export, done_s=0.0, running_s=None)
        while True:
            elapsed = time.perf_counter() - started
            run.progress.append((round(elapsed, 2), int(export["rows_written"])))
            if export["status"] == "running" and run.running_s is None:
                run.running_s = elapsed
            if export["status"] == "done":
                break
            # A failed attempt would be retried, but its time is lost: not a figure to keep.
            if export["status"] == "failed" or export.get("error"):
                raise RuntimeError(f"the export failed: {export.get('error')}")
            if export["status"] == "queued" and elapsed > QUEUE_TIMEOUT_S:
                raise RuntimeError(
                    f"the export was not started within {QUEUE_TIMEOUT_S:.0f} s: no job worker "
                    "with exports configured is running"
                )
            if elapsed > EXPORT_TIMEOUT_S:
                raise RuntimeError(f"the export was not done within {EXPORT_TIMEOUT_S:.0f} s")
            await asyncio.sleep(POLL_S)
            response = await client.get(f"/v1/exports/{export['id']}")
            if response.status_code != 200:
                raise RuntimeError(f"GET /v1/exports/{{id}} answered {response.status_code}")
            export = response.json()
        run.done_s = time.perf_counter() - started
        run.export = export
        memory.mark("download")
        started = time.perf_counter()
        hashed = hashlib.sha256()
        async with client.stream("GET", f"/v1/exports/{export['id']}/download") as download:
            if download.status_code != 200:
                raise RuntimeError(f"the download answered {download.status_code}")
            run.etag = download.headers.get("etag")
            async for chunk in download.aiter_raw():
                hashed.update(chunk)
                run.downloaded_bytes += len(chunk)
                run.downloaded_lines += chunk.count(b"\n")
        run.download_s = time.perf_counter() - started
        run.downloaded_sha256 = hashed.hexdigest()
        memory.mark("after")
    return run


@contextlib.contextmanager
def job_worker(url: str, folder: Path, settings: dict[str, str]) -> Iterator[int | None]:
    """`marketplace worker` beside a server without its in-process worker (`--no-worker`)."""
    if settings.get("MARKETPLACE_RUN_WORKER_IN_PROCESS") != "false":
        yield None
        return
    from bench.ledger import command_env, marketplace_command

    log = folder / "worker.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*marketplace_command(), "worker"],
            cwd=REPOSITORY,
            env=command_env(url, folder, settings),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def measure(
    plan: Plan,
    server_url: str,
    folder: Path,
    *,
    workers: int,
    settings: dict[str, str],
    jobs: int,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Load the group's database, time COPY, run the export through a server, time COPY again.

    `settings` are the other groups' server settings; the pseudonym key is added,
    so that the COPY here computes the pseudonyms the server's job writes.
    """
    say(
        f"  exports: loading {plan.households:,} households and {plan.entries:,} ledger "
        f"entries into {DATABASE} ..."
    )
    url, data = asyncio.run(prepare(server_url, plan, now=datetime.now(UTC), jobs=jobs))
    try:
        say(
            f"  exports: {data['households']:,} households ({data['members']:,} members) in "
            f"{data['villages']:,} villages of {data['counties']} counties, "
            f"{data['entries']:,} ledger entries, {data['flags']:,} flags, "
            f"{data['other_incomes']:,} other incomes; loaded in {data['load_s']} s "
            f"({data['bytes'] / 2**30:.2f} GiB)"
        )
        key = secrets.token_urlsafe(32)
        region, year = data["province"], data["year"]
        body = {
            "table": "household_year",
            "format": "csv",
            "region": region,
            "year": year,
            "include_names": False,
            "bom": False,
        }
        sql, args = asyncio.run(export_sql(url, plan.seed, region, year, key.encode()))
        query_plan = asyncio.run(explain(url, sql, args))
        # Unmeasured: warms the caches the measured runs and the export then find warm.
        warm = asyncio.run(copy_out(url, sql, args, digest=True))
        before = asyncio.run(copy_out(url, sql, args))
        say(
            f"  exports: COPY (household-year) TO STDOUT: {before.rows:,} rows, "
            f"{before.bytes / 2**20:.1f} MiB in {before.seconds:.2f} s"
        )
        here = folder / "exports"
        here.mkdir(parents=True, exist_ok=True)
        server_settings = settings | {"MARKETPLACE_EXPORT_PSEUDONYM_KEY": key}
        with (
            running_server(url, here, workers=workers, settings=server_settings) as server,
            job_worker(url, here, server_settings) as worker,
        ):
            processes = server_processes(int(server.base_url.rsplit(":", 1)[1]))
            if worker is not None:
                processes[worker] = "job worker (marketplace worker)"
            token = issue_token(
                user_id=admin_id(plan.seed),
                role="admin",
                secret=server.jwt_secret,
                ttl=timedelta(hours=2),
                now=datetime.now(UTC),
            )
            memory = Memory(processes)
            memory.start()
            try:
                api = asyncio.run(through_the_api(server.base_url, token, body, memory))
            finally:
                memory.stop()
            log_tail = server.log_tail()
        after = asyncio.run(copy_out(url, sql, args))
        say(f"  exports: COPY again: {after.rows:,} rows in {after.seconds:.2f} s")
    finally:
        asyncio.run(drop_database(server_url, DATABASE))
    return summarise(
        plan, data, body, api, warm, [before, after], memory, query_plan, sql, log_tail, say
    )


def summarise(
    plan: Plan,
    data: dict[str, Any],
    body: dict[str, Any],
    api: ApiRun,
    warm: Copied,
    copies: list[Copied],
    memory: Memory,
    query_plan: str,
    sql: str,
    log_tail: str,
    say: Callable[[str], None],
) -> dict[str, Any]:
    manifest = api.export["manifest"] or {}
    rows = int(manifest.get("rows", 0))
    baseline_s = min(c.seconds for c in copies)
    server_s = (
        datetime.fromisoformat(manifest["finished_at"])
        - datetime.fromisoformat(manifest["requested_at"])
    ).total_seconds()
    checks = {
        "download_sha256_matches_manifest": api.downloaded_sha256 == manifest.get("sha256"),
        "download_bytes_match_manifest": api.downloaded_bytes == manifest.get("bytes"),
        "etag_is_sha256": api.etag == f'"{manifest.get("sha256")}"',
        # One line per row and the header: no value of this table holds a line end.
        "download_rows_match_manifest": api.downloaded_lines - 1 == rows,
        "rows_are_the_households": rows == data["households"],
        "copy_rows_match": all(c.rows == rows for c in [warm, *copies]),
        # Same statement, same key, same data: PostgreSQL's COPY is the export's very file.
        "copy_is_the_exported_file": warm.sha256 == manifest.get("sha256"),
    }
    memory_report = memory.report()
    ratio = api.done_s / baseline_s if baseline_s else None
    with_download = (api.done_s + api.download_s) / baseline_s if baseline_s else None
    queued_s = round(api.running_s, 2) if api.running_s is not None else None
    result: dict[str, Any] = {
        "target_ratio": TARGET_RATIO,
        "plan": {"households": plan.households, "entries": plan.entries, "seed": plan.seed},
        "data": data,
        "request": body,
        "baseline": {
            "statement": "COPY (<the export's statement>) TO STDOUT WITH (FORMAT csv, HEADER), "
            "read by asyncpg's copy_from_query and dropped",
            "warmup": warm.as_dict(),
            "runs": [
                c.as_dict() | {"when": w} for c, w in zip(copies, ("before", "after"), strict=True)
            ],
            "seconds": round(baseline_s, 3),
            "sql": sql,
            "plan": query_plan,
        },
        "export": {
            "id": api.export["id"],
            "seconds": round(api.done_s, 3),
            "server_seconds": round(server_s, 3),
            "queued_s": queued_s,
            "poll_s": POLL_S,
            "rows": rows,
            "bytes": manifest.get("bytes"),
            "sha256": manifest.get("sha256"),
            "rows_per_s": round(rows / api.done_s, 1) if api.done_s else None,
            "progress": _thin(api.progress, 40),
        },
        "download": {
            "seconds": round(api.download_s, 3),
            "bytes": api.downloaded_bytes,
            "mib_per_s": round(api.downloaded_bytes / 2**20 / api.download_s, 1)
            if api.download_s
            else None,
        },
        "ratio": round(ratio, 3) if ratio is not None else None,
        "ratio_with_download": round(with_download, 3) if with_download is not None else None,
        "target_met": ratio is not None and ratio <= TARGET_RATIO,
        "checks": checks,
        "consistent": all(checks.values()),
        "memory": memory_report,
        "server_log_tail": log_tail,
    }
    say(
        f"  exports: POST to done {api.done_s:.2f} s ({rows / api.done_s:,.0f} rows/s; "
        f"server's own {server_s:.2f} s, queued {queued_s} s), download "
        f"{api.download_s:.2f} s; COPY {baseline_s:.2f} s: ratio {ratio:.2f} (target "
        f"{TARGET_RATIO:g}), with the download {with_download:.2f}"
    )
    peaks = ", ".join(
        f"{p['role']} {p['before_mb']:.0f} → {max(p['peak_export_mb'], p['peak_download_mb']):.0f}"
        for p in memory_report["processes"]
    )
    say(f"  exports: resident MB before → peak: {peaks}; checks {checks}")
    if not result["consistent"]:
        say("  warning: the export does not match its manifest or PostgreSQL's COPY")
    return result
