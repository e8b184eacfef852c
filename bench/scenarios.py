"""The catalogue requests the benchmark measures, built from the data actually loaded."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

from bench.db import connect
from services.regions.codes import code_range

ZH_TERMS = ("河田鸡", "蜂蜜", "猕猴桃", "香菇")
EN_TERMS = ("honey", "organic")
# Fen: 30 to 150 yuan, the middle of the catalogue's price spread.
MIN_PRICE = 3_000
MAX_PRICE = 15_000
PATHS_PER_SCENARIO = 2_000


@dataclass(frozen=True, slots=True)
class Context:
    """What the scenarios draw from: visible product ids and region codes by level."""

    product_ids: list[uuid.UUID]
    regions: dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    listing: bool
    # Precomputed so that building URLs costs the load generator nothing while it runs.
    paths: list[str]
    # Query parameters whose SQL is EXPLAINed (GET /v1/products only).
    explain: list[dict[str, str]]


async def load_context(url: str, sample: int = 1_000) -> Context:
    conn = await connect(url)
    try:
        # Publicly visible products only (as get_listing shows them), in a stable order.
        ids = await conn.fetch(
            """
            SELECT p.id FROM products p JOIN cooperatives c ON c.id = p.cooperative_id
            WHERE p.status = 'active' AND c.status = 'active'
            ORDER BY md5(p.id::text) LIMIT $1
            """,
            sample,
        )
        rows = await conn.fetch(
            "SELECT code, level FROM regions WHERE level IN ('county', 'township', 'village') "
            "ORDER BY code"
        )
    finally:
        await conn.close()
    regions: dict[str, list[str]] = {"county": [], "township": [], "village": []}
    for row in rows:
        regions[row["level"]].append(row["code"].strip())
    if not ids or not all(regions.values()):
        raise RuntimeError("the database holds no visible products or no region hierarchy")
    return Context([row["id"] for row in ids], regions)


def listing_path(params: dict[str, str]) -> str:
    return "/v1/products?" + urlencode(params)


async def count_matches(url: str, context: Context) -> dict[str, int]:
    """How many listed products each representative request matches (describes the data).

    Written by hand for the description only; the plans use the service's own SQL.
    """
    conn = await connect(url)
    counts: dict[str, int] = {}
    try:
        counts["listed"] = await conn.fetchval(
            "SELECT count(*) FROM products WHERE status = 'active' AND cooperative_active"
        )
        for term in (*ZH_TERMS, *EN_TERMS):
            counts[f"q={term}"] = await conn.fetchval(
                "SELECT count(*) FROM products WHERE status = 'active' AND cooperative_active "
                "AND strpos(lower(title || ' ' || description), lower($1)) > 0",
                term,
            )
        for level in ("county", "township", "village"):
            code = sample_region(context, level)
            low, high = code_range(code)
            counts[f"{level} {code} certified {MIN_PRICE}-{MAX_PRICE} fen"] = await conn.fetchval(
                "SELECT count(*) FROM products WHERE status = 'active' AND cooperative_active "
                "AND origin_village_code BETWEEN $1 AND $2 AND certificate_number IS NOT NULL "
                "AND certificate_valid_until >= current_date AND price_fen BETWEEN $3 AND $4",
                low,
                high,
                MIN_PRICE,
                MAX_PRICE,
            )
    finally:
        await conn.close()
    return counts


def sample_region(context: Context, level: str) -> str:
    """A representative region of a level for EXPLAIN: the middle one, not an edge case."""
    codes = context.regions[level]
    return codes[len(codes) // 2]


def _filtered(code: str) -> dict[str, str]:
    return {
        "limit": "20",
        "region": code,
        "certified": "true",
        "min_price": str(MIN_PRICE),
        "max_price": str(MAX_PRICE),
    }


def build(context: Context, seed: int = 7) -> list[Scenario]:
    rng = random.Random(seed)
    n = PATHS_PER_SCENARIO
    levels = ("county", "township", "village")
    sample_regions = [sample_region(context, level) for level in levels]
    filtered = [_filtered(rng.choice(context.regions[rng.choice(levels)])) for _ in range(n)]
    return [
        Scenario(
            "list",
            "GET /v1/products?limit=20: the storefront's first page, newest first",
            True,
            [listing_path({"limit": "20"})],
            [{"limit": "20"}],
        ),
        Scenario(
            "q_zh",
            "GET /v1/products?limit=20&q=…: Chinese search (" + ", ".join(ZH_TERMS) + ")",
            True,
            [listing_path({"limit": "20", "q": rng.choice(ZH_TERMS)}) for _ in range(n)],
            [{"limit": "20", "q": term} for term in ZH_TERMS],
        ),
        Scenario(
            "q_en",
            "GET /v1/products?limit=20&q=…: English search (" + ", ".join(EN_TERMS) + ")",
            True,
            [listing_path({"limit": "20", "q": rng.choice(EN_TERMS)}) for _ in range(n)],
            [{"limit": "20", "q": term} for term in EN_TERMS],
        ),
        Scenario(
            "region_certified_price",
            "GET /v1/products?limit=20&region=…&certified=true&min_price=3000&max_price=15000: "
            "a random county, township or village",
            True,
            [listing_path(params) for params in filtered],
            [_filtered(code) for code in sample_regions],
        ),
        Scenario(
            "product_by_id",
            "GET /v1/products/{id}: one product, ids sampled from the visible ones",
            False,
            [f"/v1/products/{rng.choice(context.product_ids)}" for _ in range(n)],
            [],
        ),
    ]
