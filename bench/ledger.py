"""The income attribution ledger: a backlog of delivered lines, recognised by the real command.

The backlog is what the service would hold after a year of cash-on-delivery
sales that the ledger never took in: households (with members) belonging to the
generated cooperatives, a supply share set per listed product (0 to 3 member
households, most often 1 or 2), and delivered orders whose cash was collected,
with their fulfilments, lines (share snapshot, fee at the app's default rates),
payments, history and, on a few percent, a partial refund made before
recognition. All of it is written in SQL (`INSERT … SELECT` from
`generate_series`), in one transaction, then vacuumed and analysed.

A few households share their phone with a buyer account, and some of that
buyer's orders are of the household's own products: the self-dealing rules
fire on those (and on the buyer's other purchases from the same cooperative),
and find nothing on every other line.

Then `marketplace ledger-recognise` works the backlog off as a subprocess, with
the server's settings, and `marketplace ledger-audit` checks the result; each is
timed, its memory sampled along the way (peak: the kernel's high-water mark),
and the CPU it and PostgreSQL used is measured (`wait4`, /proc).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from app.settings import Settings
from bench import cpu
from bench.datagen import GIVEN, SURNAMES
from bench.db import connect, with_database
from services.ledger.flags import HOLDING
from services.ledger.service import CHINA

GROUPS = ("ledger",)
TARGET_LINES_PER_S = 20_000
DEFAULT_LINES = 1_000_000
# `ledger-recognise --batch-size` the benchmark passes unless told otherwise.
DEFAULT_BATCH_SIZE = 20_000
# One household in this many shares its phone with a buyer account, and one order in
# this many is that buyer's purchase of the household's own product.
PLANTED_HOUSEHOLD_EVERY = 250
PLANTED_ORDER_EVERY = 2_500
REFUND_PERCENT = 3
COMMAND_TIMEOUT_S = 4 * 3600.0
POLL_S = 0.5
REPOSITORY = Path(__file__).resolve().parent.parent


def cli_default(name: str) -> int:
    """A default of `marketplace ledger-recognise`: batch_size (fulfilments a transaction)
    or workers (batches at once, each on a connection of its own)."""
    from app.cli import ledger_recognise

    for param in ledger_recognise.params:
        if param.name == name:
            return int(param.default)  # type: ignore[arg-type]
    raise RuntimeError(f"ledger-recognise has no option {name}")


# --- the backlog ----------------------------------------------------------------------------

# Deterministic draws: the seed is baked into the function when it is created.
_DRAW = """
CREATE FUNCTION pg_temp.draw(n bigint, salt int, m bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS 'SELECT ((hashint8extended(n, SEED * 1000 + salt) % m) + m) % m'
"""

_BACKLOG = (
    # Configuration and the generated world: villages by county, buyers with their address.
    """
    CREATE TEMP TABLE bl_cfg ON COMMIT DROP AS
    SELECT $1::int AS lines, $2::timestamptz AS year_start, $3::timestamptz AS year_end,
           $4::int AS fee_bp, $5::int AS fee_bp_certified, $6::text AS surnames,
           $7::text AS given, $8::int AS plant_households, $9::int AS plant_orders,
           $10::int AS refund_percent,
           ARRAY['illness','disability','education','disaster','land','water','technology',
                 'labour','funds','transport','motivation','other'] AS causes
    """,
    """
    CREATE TEMP TABLE bl_villages ON COMMIT DROP AS
    SELECT v.code, c.code AS county_code, c.name AS county, t.name AS township,
           v.name AS village,
           row_number() OVER (PARTITION BY c.code ORDER BY v.code) AS rank,
           count(*) OVER (PARTITION BY c.code) AS in_county,
           row_number() OVER (ORDER BY v.code) AS ord
    FROM regions v JOIN regions t ON t.code = v.parent_code
    JOIN regions c ON c.code = t.parent_code
    WHERE v.level = 'village'
    """,
    """
    CREATE TEMP TABLE bl_buyers ON COMMIT DROP AS
    WITH b AS (
        SELECT id, display_name, phone, row_number() OVER (ORDER BY email) AS b
        FROM users WHERE role = 'buyer' AND is_active
    )
    SELECT b.b, b.id, b.phone, jsonb_build_object(
               'recipient', b.display_name, 'phone', b.phone, 'province', '虚构省',
               'city', '虚构省示范市', 'county', v.county,
               'street', v.township || v.village || ' ' || (b.b % 9 + 1) || ' 组 '
                   || (b.b % 97 + 1) || ' 号',
               'region_code', v.code, 'postal_code', NULL) AS address
    FROM b
    JOIN bl_villages v ON v.ord = 1 + pg_temp.draw(b.b, 1, (SELECT count(*) FROM bl_villages))
    """,
    # Member households: 8 to 32 per cooperative, in its county, most in its own village.
    """
    CREATE TEMP TABLE bl_coops ON COMMIT DROP AS
    SELECT id, county_code, village_code, linkages, ord, 8 + pg_temp.draw(ord, 2, 25) AS members
    FROM (SELECT c.*, row_number() OVER (ORDER BY c.id) AS ord FROM cooperatives c) c
    """,
    """
    CREATE TEMP TABLE bl_homes ON COMMIT DROP AS
    WITH h AS (
        SELECT c.id AS cooperative_id, c.county_code, c.village_code AS coop_village,
               c.linkages, c.members, k AS member_no,
               row_number() OVER (ORDER BY c.ord, k) AS serial
        FROM bl_coops c CROSS JOIN LATERAL generate_series(1, c.members) AS k
    ), placed AS (
        SELECT h.*, CASE WHEN pg_temp.draw(h.serial, 3, 10) < 6 THEN cv.rank
                         ELSE 1 + pg_temp.draw(h.serial, 4, cv.in_county) END AS village_rank,
               CASE WHEN h.serial % cfg.plant_households = 0
                    THEN 1 + (h.serial / cfg.plant_households - 1)
                         % (SELECT count(*) FROM bl_buyers) END AS planted_buyer
        FROM h JOIN bl_villages cv ON cv.code = h.coop_village, bl_cfg cfg
    )
    SELECT gen_random_uuid() AS id, p.cooperative_id, p.county_code, p.linkages, p.members,
           p.member_no, p.serial, p.planted_buyer, v.code AS village_code,
           v.township || v.village || ' ' || (1 + pg_temp.draw(p.serial, 5, 9)) || ' 组'
               AS address,
           coalesce(b.phone, '1380' || lpad(p.serial::text, 7, '0')) AS phone
    FROM placed p
    JOIN bl_villages v ON v.county_code = p.county_code AND v.rank = p.village_rank
    LEFT JOIN bl_buyers b ON b.b = p.planted_buyer
    """,
    """
    INSERT INTO households (id, county_code, village_code, address, phone, poor,
                            household_type, standard, main_cause, other_causes,
                            registration_year, status, food_clothing, compulsory_education,
                            basic_medical, safe_housing, safe_drinking_water)
    SELECT id, county_code, village_code, address, phone, pg_temp.draw(serial, 6, 10) < 9,
           (ARRAY['ordinary','ordinary','ordinary','minimum_living','allowance_poor',
                  'five_guarantee'])[1 + pg_temp.draw(serial, 7, 6)],
           CASE WHEN pg_temp.draw(serial, 8, 10) < 8 THEN 'national' ELSE 'provincial' END,
           cfg.causes[1 + main],
           CASE WHEN pg_temp.draw(serial, 10, 2) = 0 THEN '{}'::varchar[]
                ELSE ARRAY[cfg.causes[1 + (main + 1 + pg_temp.draw(serial, 11, 11)) % 12]]
           END,
           2014 + pg_temp.draw(serial, 12, 6),
           (ARRAY['registered','exited','exited','exited','monitored',
                  'returned'])[1 + pg_temp.draw(serial, 13, 6)],
           true, true, true, true, pg_temp.draw(serial, 14, 10) < 9
    FROM (SELECT *, pg_temp.draw(serial, 9, 12) AS main FROM bl_homes) h, bl_cfg cfg
    ORDER BY serial
    """,
    """
    INSERT INTO household_members (id, household_id, position, name, birth_year, sex, relation,
                                   education, in_school, health, labour, migrant_work_months,
                                   medical_insurance, pension_insurance, allowance)
    SELECT gen_random_uuid(), h.id, m - 1,
           substr(cfg.surnames, 1 + pg_temp.draw(h.serial, 20, length(cfg.surnames))::int, 1)
               || substr(cfg.given, 1 + pg_temp.draw(x, 21, length(cfg.given))::int, 1)
               || CASE WHEN pg_temp.draw(x, 22, 3) > 0
                       THEN substr(cfg.given, 1 + pg_temp.draw(x, 23, length(cfg.given))::int, 1)
                       ELSE '' END,
           CASE WHEN m <= 2 THEN 1950 + pg_temp.draw(h.serial, 24, 30)
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
    FROM bl_homes h, bl_cfg cfg,
         LATERAL generate_series(1, 1 + pg_temp.draw(h.serial, 19, 5)::int) AS m,
         LATERAL (SELECT h.serial * 8 + m AS x) AS member
    ORDER BY h.serial, m
    """,
    """
    INSERT INTO cooperative_members (cooperative_id, household_id, county_code, joined_on,
                                     left_on, linkages)
    SELECT h.cooperative_id, h.id, h.county_code,
           cfg.year_start::date - (200 + pg_temp.draw(h.serial, 34, 1200))::int, NULL, h.linkages
    FROM bl_homes h, bl_cfg cfg ORDER BY h.serial
    """,
    # A share set per listed product: 0 to 3 member households of its cooperative.
    """
    CREATE TEMP TABLE bl_products ON COMMIT DROP AS
    SELECT p.*, CASE WHEN d < 10 THEN 0 WHEN d < 55 THEN 1 WHEN d < 88 THEN 2 ELSE 3 END
               AS households
    FROM (
        SELECT p.id, p.cooperative_id, p.county_code, p.title, p.unit, p.price_fen, p.currency,
               coalesce(p.certificate_number <> '', false) AS has_certificate,
               p.certificate_valid_until, c.members,
               row_number() OVER (ORDER BY p.id) AS ord,
               row_number() OVER (PARTITION BY p.cooperative_id ORDER BY p.id) - 1 AS rank,
               count(*) OVER (PARTITION BY p.cooperative_id) AS in_coop,
               pg_temp.draw(row_number() OVER (ORDER BY p.id), 35, 100) AS d
        FROM products p JOIN bl_coops c ON c.id = p.cooperative_id
        WHERE p.status = 'active' AND p.cooperative_active
    ) p
    """,
    """
    CREATE TEMP TABLE bl_sets ON COMMIT DROP AS
    SELECT gen_random_uuid() AS set_id, id AS product_id, county_code, cooperative_id, ord,
           households, members
    FROM bl_products WHERE households > 0
    """,
    """
    INSERT INTO supply_share_sets (id, product_id, county_code, effective_from, created_by)
    SELECT s.set_id, s.product_id, s.county_code, cfg.year_start - interval '30 days', NULL
    FROM bl_sets s, bl_cfg cfg ORDER BY s.ord
    """,
    """
    CREATE TEMP TABLE bl_entries ON COMMIT DROP AS
    SELECT s.set_id, s.product_id, h.id AS household_id, h.planted_buyer,
           CASE s.households WHEN 1 THEN 2000 + 100 * pg_temp.draw(s.ord, 37, 81)
                             WHEN 2 THEN 1000 + 100 * pg_temp.draw(s.ord * 4 + i, 38, 36)
                             ELSE 1000 + 100 * pg_temp.draw(s.ord * 4 + i, 39, 21)
           END::int AS basis_points
    FROM bl_sets s CROSS JOIN LATERAL generate_series(0, s.households - 1) AS i
    JOIN bl_homes h ON h.cooperative_id = s.cooperative_id
     AND h.member_no = 1 + (pg_temp.draw(s.ord, 36, s.members) + i) % s.members
    """,
    """
    INSERT INTO supply_share_entries (set_id, household_id, basis_points)
    SELECT set_id, household_id, basis_points FROM bl_entries ORDER BY set_id, household_id
    """,
    # The listed products with their snapshot, as checkout and payment take it.
    """
    CREATE TEMP TABLE bl_listed ON COMMIT DROP AS
    SELECT p.*, s.set_id, coalesce(s.shares, '[]'::jsonb) AS shares, s.planted_buyer,
           CASE WHEN s.planted_buyer IS NOT NULL
                THEN row_number() OVER (PARTITION BY s.planted_buyer IS NULL ORDER BY p.ord)
           END AS planted_ord
    FROM bl_products p LEFT JOIN (
        SELECT set_id, product_id, min(planted_buyer) AS planted_buyer,
               jsonb_agg(jsonb_build_object('household_id', household_id::text,
                                            'basis_points', basis_points)
                         ORDER BY household_id) AS shares
        FROM bl_entries GROUP BY set_id, product_id
    ) s ON s.product_id = p.id
    """,
    "CREATE INDEX ON bl_listed (ord)",
    "CREATE INDEX ON bl_listed (cooperative_id, rank)",
    "CREATE INDEX ON bl_listed (planted_ord)",
    "ANALYZE bl_listed",
    # Orders of one fulfilment (nine in ten) or two, each of 1 to 4 lines of its
    # cooperative's products, until the lines asked for are reached.
    """
    CREATE TEMP TABLE bl_draft ON COMMIT DROP AS
    WITH n AS (
        SELECT count(*) AS listed, count(planted_ord) AS planted FROM bl_listed
    ), o AS (
        SELECT o, CASE WHEN pg_temp.draw(o, 40, 10) = 0 THEN 2 ELSE 1 END AS nf,
               n.planted > 0 AND o % cfg.plant_orders = 0 AS planted
        FROM bl_cfg cfg, n, generate_series(1, cfg.lines) AS o
    )
    SELECT o.o, k, o.planted AND k = 1 AS planted,
           CASE WHEN o.planted AND k = 1
                THEN (SELECT l.ord FROM bl_listed l
                      WHERE l.planted_ord = 1 + pg_temp.draw(o.o, 41, n.planted))
                ELSE 1 + pg_temp.draw(o.o * 2 + k, 42, n.listed) END AS first_ord,
           (ARRAY[1,1,1,1,1,1,1,1,1,1,1,2,2,2,2,2,3,3,4,4])[1 + pg_temp.draw(o.o * 2 + k, 43, 20)]
               AS wanted
    FROM o, n, generate_series(1, o.nf) AS k
    """,
    """
    CREATE TEMP TABLE bl_fulfilments ON COMMIT DROP AS
    WITH joined AS (
        SELECT d.o, d.k, l.cooperative_id, l.county_code, l.rank, l.in_coop,
               least(d.wanted, l.in_coop) AS nl,
               CASE WHEN d.planted THEN l.planted_buyer END AS planted_buyer,
               lag(l.cooperative_id) OVER (PARTITION BY d.o ORDER BY d.k) AS before
        FROM bl_draft d JOIN bl_listed l ON l.ord = d.first_ord
    ), kept AS (
        SELECT *, (sum(nl) OVER (ORDER BY o, k ROWS UNBOUNDED PRECEDING) - nl)::bigint AS start
        FROM joined WHERE before IS DISTINCT FROM cooperative_id
    )
    SELECT gen_random_uuid() AS id, kept.o, kept.k, kept.cooperative_id, kept.county_code,
           kept.rank, kept.in_coop, least(kept.nl, cfg.lines - kept.start)::int AS nl,
           kept.start, kept.planted_buyer, row_number() OVER (ORDER BY kept.o, kept.k) AS j
    FROM kept, bl_cfg cfg WHERE kept.start < cfg.lines
    """,
    "ANALYZE bl_fulfilments",
    # Delivered over the previous year (China time), the cash collected at the first
    # parcel; placed two to five days before.
    """
    CREATE TEMP TABLE bl_orders ON COMMIT DROP AS
    WITH f AS (
        SELECT o, min(j) AS j, min(start) AS start, max(planted_buyer) AS planted_buyer
        FROM bl_fulfilments GROUP BY o
    ), n AS (
        SELECT (SELECT count(*) FROM bl_fulfilments) AS fulfilments,
               (SELECT count(*) FROM bl_buyers) AS buyers
    ), timed AS (
        SELECT f.*, cfg.year_start + (cfg.year_end - cfg.year_start)
                   * ((f.j - 0.5) / n.fulfilments)::float8 AS paid_at,
               coalesce(f.planted_buyer, 1 + pg_temp.draw(f.o, 50, n.buyers)) AS buyer,
               pg_temp.draw(f.o, 51, 100) < cfg.refund_percent AS refunded
        FROM f, n, bl_cfg cfg
    )
    SELECT gen_random_uuid() AS id, gen_random_uuid() AS payment_id, t.*,
           t.paid_at - interval '2 days' - pg_temp.draw(t.o, 52, 72) * interval '1 hour'
               AS placed_at
    FROM timed t
    """,
    "ANALYZE bl_orders",
    """
    CREATE TEMP TABLE bl_lines ON COMMIT DROP AS
    WITH x AS (
        SELECT f.id AS fulfilment_id, f.o, f.k, o.id AS order_id, o.refunded, o.placed_at,
               o.paid_at, (f.start - o.start + i)::smallint AS position, l.ord AS product_ord,
               l.price_fen,
               (ARRAY[1,1,1,1,1,1,1,1,1,1,1,1,2,2,2,2,2,3,3,5])[
                   1 + pg_temp.draw(f.start + i, 60, 20)] AS quantity,
               coalesce(l.has_certificate AND l.certificate_valid_until >= o.placed_at::date,
                        false) AS certified
        FROM bl_fulfilments f JOIN bl_orders o ON o.o = f.o
        CROSS JOIN LATERAL generate_series(0, f.nl - 1) AS i
        JOIN bl_listed l ON l.cooperative_id = f.cooperative_id
         AND l.rank = (f.rank + i) % f.in_coop
    ), priced AS (
        SELECT x.*, x.price_fen * x.quantity AS gross_fen,
               CASE WHEN x.certified THEN cfg.fee_bp_certified ELSE cfg.fee_bp END AS fee_bp
        FROM x, bl_cfg cfg
    ), refunded AS (
        -- One unit of a line of several, else part of the amount of a line of one.
        SELECT p.*, CASE WHEN NOT (p.refunded AND p.position = 0) THEN 0
                         WHEN p.quantity > 1 THEN 1 ELSE 0 END AS refunded_quantity,
               CASE WHEN NOT (p.refunded AND p.position = 0) THEN 0
                    WHEN p.quantity > 1 THEN p.price_fen
                    ELSE p.gross_fen * (20 + pg_temp.draw(p.o, 61, 31)) / 100 END
                   AS refunded_fen
        FROM priced p
    )
    SELECT gen_random_uuid() AS id, r.*, r.gross_fen * r.fee_bp / 10000 AS fee_fen
    FROM refunded r
    """,
    "ANALYZE bl_lines",
    """
    CREATE TEMP TABLE bl_totals ON COMMIT DROP AS
    SELECT order_id, sum(gross_fen) AS gross_fen, sum(fee_fen) AS fee_fen,
           sum(refunded_fen) AS refunded_fen
    FROM bl_lines GROUP BY order_id
    """,
    # The rows, in the order the service writes them (foreign keys first).
    """
    INSERT INTO orders (id, buyer_id, status, payment_method, payment_status, currency,
                        items_fen, fee_fen, total_fen, paid_fen, refunded_fen, delivery_type,
                        delivery_address, settlement_hold, paid_at, created_at, updated_at)
    SELECT o.id, b.id, 'delivered', 'cod',
           CASE WHEN t.refunded_fen > 0 THEN 'partially_refunded' ELSE 'paid' END, 'CNY',
           t.gross_fen, t.fee_fen, t.gross_fen, t.gross_fen, t.refunded_fen, 'home', b.address,
           false, o.paid_at, o.placed_at,
           CASE WHEN t.refunded_fen > 0 THEN o.paid_at + interval '1 day' ELSE o.paid_at END
    FROM bl_orders o JOIN bl_totals t ON t.order_id = o.id JOIN bl_buyers b ON b.b = o.buyer
    ORDER BY o.o
    """,
    """
    INSERT INTO fulfilments (id, order_id, cooperative_id, county_code, status, items_fen,
                             delivered_at, created_at, updated_at)
    SELECT f.id, o.id, f.cooperative_id, f.county_code, 'delivered', s.gross_fen,
           d.delivered_at, o.placed_at, d.delivered_at
    FROM bl_fulfilments f JOIN bl_orders o ON o.o = f.o
    JOIN (SELECT fulfilment_id, sum(gross_fen) AS gross_fen FROM bl_lines GROUP BY 1) s
      ON s.fulfilment_id = f.id
    CROSS JOIN LATERAL (SELECT o.paid_at + (f.j - o.j) * interval '1 hour' AS delivered_at) d
    ORDER BY f.j
    """,
    """
    INSERT INTO order_lines (id, order_id, fulfilment_id, position, product_id, cooperative_id,
                             county_code, title, unit, unit_price_fen, quantity, gross_fen,
                             certified, fee_bp, fee_fen, share_set_id, shares, shares_at,
                             refunded_quantity, refunded_fen)
    SELECT x.id, x.order_id, x.fulfilment_id, x.position, l.id, l.cooperative_id,
           l.county_code, l.title, l.unit, x.price_fen, x.quantity, x.gross_fen, x.certified,
           x.fee_bp, x.fee_fen, l.set_id, l.shares, x.paid_at, x.refunded_quantity,
           x.refunded_fen
    FROM bl_lines x JOIN bl_listed l ON l.ord = x.product_ord
    ORDER BY x.o, x.position
    """,
    """
    INSERT INTO payments (id, order_id, provider, state, amount_fen, currency, failures,
                          succeeded_at, created_at, updated_at)
    SELECT o.payment_id, o.id, 'cash', 'succeeded', t.gross_fen, 'CNY', 0, o.paid_at,
           o.placed_at, o.paid_at
    FROM bl_orders o JOIN bl_totals t ON t.order_id = o.id ORDER BY o.o
    """,
    """
    INSERT INTO refunds (id, order_id, payment_id, amount_fen, currency, state,
                         provider_refund_id, reason, allocation, requested_by, created_at,
                         updated_at)
    SELECT gen_random_uuid(), o.id, o.payment_id, x.refunded_fen, 'CNY', 'succeeded', NULL,
           'part of the goods arrived damaged',
           jsonb_build_array(jsonb_build_object('line_id', x.id::text,
                                                'quantity', x.refunded_quantity,
                                                'amount_fen', x.refunded_fen)),
           NULL, o.paid_at + interval '1 day', o.paid_at + interval '1 day'
    FROM bl_lines x JOIN bl_orders o ON o.id = x.order_id
    WHERE x.refunded_fen > 0 ORDER BY o.o
    """,
    """
    INSERT INTO order_events (order_id, from_status, to_status, reason, actor_id, at)
    SELECT o.id, e.from_status, e.to_status, e.reason,
           CASE WHEN e.step = 1 THEN b.id END, e.at
    FROM bl_orders o JOIN bl_buyers b ON b.b = o.buyer
    CROSS JOIN LATERAL (VALUES
        (1, NULL, 'confirmed', 'checkout', o.placed_at),
        (2, 'confirmed', 'shipped', 'parcel shipped', o.placed_at + interval '6 hours'),
        (3, 'shipped', 'delivered', 'every parcel delivered', o.paid_at)
    ) AS e(step, from_status, to_status, reason, at)
    ORDER BY o.o, e.step
    """,
)

_SUMMARY = """
SELECT (SELECT count(*) FROM bl_homes) AS households,
       (SELECT count(*) FROM bl_homes WHERE planted_buyer IS NOT NULL) AS planted_households,
       (SELECT count(*) FROM bl_sets) AS share_sets,
       (SELECT count(*) FROM bl_entries) AS share_entries,
       (SELECT count(*) FROM bl_listed) AS listed_products,
       (SELECT count(*) FROM bl_orders) AS orders,
       (SELECT count(*) FROM bl_orders WHERE planted_buyer IS NOT NULL) AS planted_orders,
       (SELECT count(*) FROM bl_fulfilments) AS fulfilments,
       (SELECT count(*) FROM bl_lines) AS lines,
       (SELECT count(*) FROM bl_lines WHERE refunded_fen > 0) AS refunded_lines
"""
_LINES_BY_HOUSEHOLDS = """
SELECT jsonb_array_length(l.shares) AS households, count(*) AS lines
FROM bl_lines x JOIN bl_listed l ON l.ord = x.product_ord GROUP BY 1 ORDER BY 1
"""
TABLES = (
    "households, household_members, cooperative_members, supply_share_sets, "
    "supply_share_entries, orders, fulfilments, order_lines, payments, refunds, order_events"
)


def _step_name(statement: str) -> str:
    """`INSERT INTO orders`, `CREATE TEMP TABLE bl_lines`, …: what a statement writes."""
    words = statement.split()
    for keyword, width in (("INSERT", 3), ("CREATE", 4), ("ANALYZE", 2)):
        if words and words[0] == keyword:
            return " ".join(words[:width])
    return " ".join(words[:3])


def assessment_year_span(now: datetime) -> tuple[int, datetime, datetime]:
    """The previous calendar year in China: a whole assessment year, spike window included."""
    year = now.astimezone(CHINA).year - 1
    return year, datetime(year, 1, 1, tzinfo=CHINA), datetime(year + 1, 1, 1, tzinfo=CHINA)


async def backlog(url: str, lines: int, *, seed: int, now: datetime) -> dict[str, Any]:
    """Write the backlog of `lines` delivered, paid, unrecognised lines; answer what it holds.

    Needs the catalogue, cooperatives, regions and buyers of `datagen.generate`.
    """
    if lines < 1:
        raise ValueError("at least one line")
    year, start, end = assessment_year_span(now)
    fields = Settings.model_fields
    started = time.perf_counter()
    conn = await connect(url)
    try:
        await conn.execute("SET temp_buffers = '256MB'")
        await conn.execute(_DRAW.replace("SEED", str(int(seed))))
        async with conn.transaction():
            await conn.execute("SET LOCAL work_mem = '256MB'")
            await conn.execute(
                _BACKLOG[0],
                lines,
                start,
                end,
                int(fields["platform_fee_bp"].default),
                int(fields["platform_fee_bp_certified"].default),
                SURNAMES,
                GIVEN,
                PLANTED_HOUSEHOLD_EVERY,
                PLANTED_ORDER_EVERY,
                REFUND_PERCENT,
            )
            steps: dict[str, float] = {}
            for statement in _BACKLOG[1:]:
                step = time.perf_counter()
                await conn.execute(statement)
                name = _step_name(statement)
                steps[name] = steps.get(name, 0.0) + time.perf_counter() - step
            summary: dict[str, Any] = {
                k: int(v) for k, v in (await conn.fetchrow(_SUMMARY) or {}).items()
            }
            if summary["lines"] != lines:
                raise RuntimeError(
                    f"{summary['lines']} of {lines} lines: no buyer, listed product or village"
                )
            summary["lines_by_households"] = {
                str(row["households"]): int(row["lines"])
                for row in await conn.fetch(_LINES_BY_HOUSEHOLDS)
            }
        written_s = time.perf_counter() - started
        # As autovacuum would have left a backlog that built up over a year: visibility
        # map set, hint bits written, statistics fresh.
        step = time.perf_counter()
        await conn.execute(f"VACUUM (ANALYZE) {TABLES}")
        steps["VACUUM (ANALYZE)"] = time.perf_counter() - step
        step = time.perf_counter()
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
        steps["CHECKPOINT"] = time.perf_counter() - step
    finally:
        await conn.close()
    summary["steps_s"] = {
        name: round(seconds, 1)
        for name, seconds in sorted(steps.items(), key=lambda item: -item[1])
        if seconds >= 0.05
    }
    return summary | {
        "year": year,
        "write_s": round(written_s, 1),
        "load_s": round(time.perf_counter() - started, 1),
    }


# --- running the commands --------------------------------------------------------------------


def _memory_mb(pid: int) -> tuple[float, float] | None:
    """(resident set, its high-water mark since the process's exec), in MB."""
    found = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0]) / 1024
    except OSError:
        return None
    if len(found) < 2:
        return None  # exiting: its memory is gone already
    return found["VmRSS"], found["VmHWM"]


class Watch(threading.Thread):
    """Samples a command's memory, and the CPU of the PostgreSQL server's processes.

    The peak is the kernel's high-water mark of the process (VmHWM), read at every
    sample. Not `wait4`'s ru_maxrss: Linux carries a process's maximum across
    exec, so it starts at the size of the (large) bench process that forked it.
    """

    def __init__(self, pid: int, postmaster: int | None) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stopped = threading.Event()
        self.started = time.monotonic()
        self.samples: list[tuple[float, float]] = []  # (seconds, RSS MB)
        self.peak_mb = 0.0
        # PostgreSQL's processes and the machine, sampled here with the memory.
        self.meter = cpu.Meter(cpu.Roots(server=None, postgres=postmaster), poll_s=POLL_S)
        self.usage: cpu.Usage | None = None

    def run(self) -> None:
        while not self.stopped.wait(POLL_S):
            memory = _memory_mb(self.pid)
            if memory is not None:
                self.samples.append((time.monotonic() - self.started, memory[0]))
                self.peak_mb = max(self.peak_mb, memory[1])
            self.meter.sample()

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.usage = self.meter.stop()

    def postgres_cpu_s(self) -> float | None:
        if self.usage is None or "postgres" not in self.usage.cores:
            return None
        return self.usage.cores["postgres"] * self.usage.wall_s

    def machine_cpu_s(self) -> float:
        assert self.usage is not None, "stop() first"
        return self.usage.machine_cores * self.usage.wall_s


@dataclass(slots=True)
class CommandRun:
    command: list[str]
    exit_code: int
    wall_s: float
    peak_rss_mb: float
    user_cpu_s: float
    system_cpu_s: float
    postgres_cpu_s: float | None
    machine_cpu_s: float
    output: list[tuple[float, str]] = field(default_factory=list)  # (seconds, line)
    rss_samples: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        cpu = self.user_cpu_s + self.system_cpu_s
        other = None
        if self.postgres_cpu_s is not None:
            other = max(0.0, self.machine_cpu_s - cpu - self.postgres_cpu_s)
        return {
            "command": " ".join(self.command),
            "exit_code": self.exit_code,
            "wall_s": round(self.wall_s, 2),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "cpu_s": round(cpu, 2),
            "user_cpu_s": round(self.user_cpu_s, 2),
            "system_cpu_s": round(self.system_cpu_s, 2),
            "postgres_cpu_s": round(self.postgres_cpu_s, 2)
            if self.postgres_cpu_s is not None
            else None,
            "other_cpu_s": round(other, 2) if other is not None else None,
            "rss_mb_samples": _thin([(round(t, 1), round(m, 1)) for t, m in self.rss_samples]),
            "output_tail": [line for _, line in self.output[-5:]],
        }


def _thin(points: list[Any], most: int = 60) -> list[Any]:
    """At most `most` points, evenly spread, the last one kept."""
    if len(points) <= most:
        return points
    step = len(points) / most
    return [points[int(i * step)] for i in range(most - 1)] + [points[-1]]


def marketplace_command() -> list[str]:
    """The installed `marketplace` script beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("marketplace")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "app.cli"]


def run_command(
    args: list[str],
    env: dict[str, str],
    *,
    postmaster: int | None,
    say: Callable[[str], None],
    echo_every: int = 25,
) -> CommandRun:
    """Run `marketplace <args>`, echoing some of its lines, and measure it."""
    command = [*marketplace_command(), *args]
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=REPOSITORY,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watch = Watch(process.pid, postmaster)
    watch.start()
    timer = threading.Timer(COMMAND_TIMEOUT_S, process.kill)
    timer.start()
    output: list[tuple[float, str]] = []
    try:
        assert process.stdout is not None
        for index, raw in enumerate(process.stdout):
            line = raw.rstrip("\n")
            output.append((time.perf_counter() - started, line))
            if index % echo_every == 0 or not line.startswith("recognised "):
                say(f"    {line}")
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        timer.cancel()
        watch.stop()
    if output and output[-1][1].startswith("recognised "):
        say(f"    {output[-1][1]}")
    return CommandRun(
        command=["marketplace", *args],
        exit_code=process.returncode,
        wall_s=wall,
        peak_rss_mb=watch.peak_mb,
        user_cpu_s=usage.ru_utime,
        system_cpu_s=usage.ru_stime,
        postgres_cpu_s=watch.postgres_cpu_s(),
        machine_cpu_s=watch.machine_cpu_s(),
        output=output,
        rss_samples=watch.samples,
    )


def command_env(url: str, folder: Path, settings: dict[str, str]) -> dict[str, str]:
    """What the bench server gets (`bench.server.running_server`), for the CLI."""
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "DATABASE_URL": url,
            "MARKETPLACE_JWT_SECRET": secrets.token_urlsafe(48),
            "MARKETPLACE_PII_KEY": secrets.token_urlsafe(32),
            "MARKETPLACE_LOG_LEVEL": "WARNING",
            "MARKETPLACE_DATA_DIR": str(folder / "app-data"),
            "PYTHONUNBUFFERED": "1",
            **settings,
        }
    )
    return env


_PROGRESS = re.compile(r"recognised (\d+) lines \((\d+) in all")
_DONE = re.compile(r"backlog done: (\d+) lines in ([\d.]+) s \(([\d,]+) lines/s\)")
_AUDITED = re.compile(r"ledger audit: (\d+) recognised lines checked; (.*)")


def along_the_backlog(run: CommandRun, lines: int, parts: int = 10) -> list[dict[str, Any]]:
    """Lines per second over each tenth of the backlog, from the times of the progress lines."""
    points = [(0.0, 0)]
    for at, line in run.output:
        if match := _PROGRESS.match(line):
            points.append((at, int(match[2])))
    out = []
    before = points[0]
    for part in range(1, parts + 1):
        done = next((p for p in points if p[1] >= lines * part / parts), None)
        if done is None or done[1] <= before[1]:
            continue  # a batch larger than a tenth: counted in the tenth it ends in
        seconds = done[0] - before[0]
        out.append(
            {
                "until_line": done[1],
                "seconds": round(seconds, 2),
                "lines_per_s": round((done[1] - before[1]) / seconds, 1) if seconds else None,
            }
        )
        before = done
    return out


_FACTS = """
SELECT (SELECT count(*) FROM ledger_entries) AS entries,
       (SELECT count(*) FROM ledger_entries WHERE household_id IS NOT NULL) AS household_entries,
       (SELECT count(*) FROM ledger_entries WHERE kind = 'adjustment') AS adjustments,
       (SELECT coalesce(sum(amount_fen), 0) FROM ledger_entries) AS entries_fen,
       (SELECT count(*) FROM ledger_recognitions) AS recognitions,
       (SELECT coalesce(sum(lines), 0) FROM ledger_recognitions) AS lines_recognised,
       -- Households' parts that a flag holds back from assessment (flags.counted()).
       (SELECT count(*) FROM (SELECT DISTINCT fl.line_id, fl.household_id
                              FROM attribution_flag_lines fl
                              JOIN attribution_flags f ON f.id = fl.flag_id
                              WHERE f.status = ANY($1::text[])) h) AS flagged_parts,
       (SELECT count(*) FROM jobs WHERE kind = 'settlements.transfer') AS transfer_jobs,
       pg_total_relation_size('ledger_entries') AS ledger_bytes
"""
_DUE_LINES = """
SELECT count(*) FROM order_lines l JOIN fulfilments f ON f.id = l.fulfilment_id
JOIN orders o ON o.id = f.order_id
WHERE f.status = 'delivered' AND o.payment_status <> 'unpaid' AND o.paid_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM ledger_recognitions r WHERE r.fulfilment_id = f.id)
"""
# The recognised lines' net revenue, as `ledger.net_after` computes it.
_NET = """
SELECT coalesce(sum((l.gross_fen - l.refunded_fen)
                    - l.fee_fen * (l.gross_fen - l.refunded_fen) / l.gross_fen), 0)
FROM order_lines l JOIN ledger_recognitions r ON r.fulfilment_id = l.fulfilment_id
WHERE l.gross_fen > 0
"""


async def due_lines(url: str) -> int:
    conn = await connect(url)
    try:
        return int(await conn.fetchval(_DUE_LINES))
    finally:
        await conn.close()


async def ledger_facts(url: str) -> dict[str, Any]:
    """What PostgreSQL holds after recognition: entries, flags by rule and status, payouts by
    state."""
    conn = await connect(url)
    try:
        # $1: the statuses of a flag that hold income back (flags.counted()'s rule).
        holding = [status.value for status in HOLDING]
        facts: dict[str, Any] = {
            k: int(v) for k, v in (await conn.fetchrow(_FACTS, holding) or {}).items()
        }
        facts["expected_net_fen"] = int(await conn.fetchval(_NET))
        facts["flags"] = {
            f"{row['rule']} {row['status']}": int(row["n"])
            for row in await conn.fetch(
                "SELECT rule, status, count(*) AS n FROM attribution_flags GROUP BY 1, 2"
                " ORDER BY 1, 2"
            )
        }
        facts["payouts"] = {
            row["state"]: int(row["n"])
            for row in await conn.fetch(
                "SELECT state, count(*) AS n FROM payouts GROUP BY 1 ORDER BY 1"
            )
        }
        facts["due_lines_left"] = int(await conn.fetchval(_DUE_LINES))
    finally:
        await conn.close()
    return facts


# --- the group ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    lines: int
    batch_sizes: list[int]
    seed: int
    workers: int


async def _clone(server_url: str, source: str, name: str, version_num: int) -> str:
    conn = await connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        strategy = " STRATEGY FILE_COPY" if version_num >= 150000 else ""
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"{strategy}')
    finally:
        await conn.close()
    return with_database(server_url, name)


async def _drop(server_url: str, name: str) -> None:
    conn = await connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def measure(
    plan: Plan,
    url: str,
    server_url: str,
    database: str,
    folder: Path,
    settings: dict[str, str],
    version_num: int,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Load the backlog, then recognise and audit it once per batch size.

    With several batch sizes each works on a copy of the loaded database (CREATE
    DATABASE … TEMPLATE), so every one meets the same backlog.
    """
    now = datetime.now(UTC)
    say(f"  ledger: loading a backlog of {plan.lines:,} delivered lines ...")
    data = asyncio.run(backlog(url, plan.lines, seed=plan.seed, now=now))
    say(
        f"  ledger: {data['lines']:,} lines in {data['fulfilments']:,} fulfilments of "
        f"{data['orders']:,} orders, {data['households']:,} households, "
        f"{data['refunded_lines']:,} refunded lines, loaded in {data['load_s']} s"
    )
    runs = []
    for batch_size in plan.batch_sizes:
        name = f"{database}_ledger_{batch_size}"
        target = url
        if len(plan.batch_sizes) > 1:
            say(f"  ledger: copying the database for --batch-size {batch_size} ...")
            target = asyncio.run(_clone(server_url, database, name, version_num))
        try:
            runs.append(_recognise_and_audit(plan, batch_size, target, folder, settings, say))
        finally:
            if target != url:
                asyncio.run(_drop(server_url, name))
    return {
        "target_lines_per_s": TARGET_LINES_PER_S,
        "cli_default_batch_size": cli_default("batch_size"),
        "cli_default_workers": cli_default("workers"),
        "workers": plan.workers,
        "data": data,
        "runs": runs,
    }


def _recognise_and_audit(
    plan: Plan,
    batch_size: int,
    url: str,
    folder: Path,
    settings: dict[str, str],
    say: Callable[[str], None],
) -> dict[str, Any]:
    env = command_env(url, folder, settings)
    postmaster = asyncio.run(cpu.postmaster_pid(url))
    backlog_lines = asyncio.run(due_lines(url))
    load_before = [round(v, 2) for v in os.getloadavg()]
    say(f"  ledger-recognise --batch-size {batch_size}: {backlog_lines:,} lines due")
    recognised = run_command(
        ["ledger-recognise", "--batch-size", str(batch_size), "--workers", str(plan.workers)],
        env,
        postmaster=postmaster,
        say=say,
    )
    load_after = [round(v, 2) for v in os.getloadavg()]
    if recognised.exit_code != 0:
        raise RuntimeError(f"ledger-recognise exited with {recognised.exit_code}")
    facts = asyncio.run(ledger_facts(url))
    lines = facts["lines_recognised"]
    own = next((m for _, line in recognised.output if (m := _DONE.match(line))), None)
    say("  ledger-audit ...")
    audited = run_command(["ledger-audit"], env, postmaster=postmaster, say=say)
    checked = next((m for _, line in audited.output if (m := _AUDITED.match(line))), None)
    audit_lines = int(checked[1]) if checked else 0
    result = {
        "batch_size": batch_size,
        "workers": plan.workers,
        "backlog_lines": backlog_lines,
        "lines": lines,
        "lines_per_s": round(lines / recognised.wall_s, 1),
        "command_lines_per_s": float(own[3].replace(",", "")) if own else None,
        "command_s": float(own[2]) if own else None,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "recognise": recognised.as_dict(),
        "along_the_backlog": along_the_backlog(recognised, lines),
        "database": facts,
        "audit": audited.as_dict()
        | {
            "lines_checked": audit_lines,
            "lines_per_s": round(audit_lines / audited.wall_s, 1),
            "verdict": checked[2] if checked else None,
        },
    }
    say(
        f"  ledger-recognise --batch-size {batch_size}: {lines:,} lines in "
        f"{recognised.wall_s:.1f} s = {result['lines_per_s']:,.0f} lines/s (target "
        f"{TARGET_LINES_PER_S:,}), peak RSS {recognised.peak_rss_mb:.0f} MB, CPU: command "
        f"{recognised.user_cpu_s + recognised.system_cpu_s:.1f} s, PostgreSQL "
        f"{recognised.postgres_cpu_s or 0:.1f} s; {facts['entries']:,} entries, flags "
        f"{facts['flags']}, payouts {facts['payouts']}"
    )
    say(
        f"  ledger-audit: exit {audited.exit_code}, {audit_lines:,} lines in "
        f"{audited.wall_s:.1f} s = {result['audit']['lines_per_s']:,.0f} lines/s, peak RSS "
        f"{audited.peak_rss_mb:.0f} MB"
    )
    return result


def attach_baseline(ledger: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    """Each recognition beside pgbench's TPC-B-like script at as many clients as the command
    has workers (each works on a connection of its own)."""
    clients = ledger.get("workers", 1)
    base = next((r for r in runs if r["mode"] == "tpcb-like" and r["clients"] == clients), None)
    if not base:
        return
    for run in ledger.get("runs", []):
        run["baseline"] = {
            "mode": "tpcb-like",
            "clients": clients,
            "tps": base["tps"],
            "lines_per_tps": round(run["lines_per_s"] / base["tps"], 3) if base["tps"] else None,
        }
