"""A fictional catalogue at any scale, written straight into a migrated database with COPY.

Province 98 does not exist, so nothing here can be mistaken for real data. Its
regions go down to villages so that region filters at county, township and
village level select realistic fractions; cooperatives carry valid unified
social credit codes; product titles and descriptions are built from a
vocabulary so that Chinese and English searches match a realistic share.
Buyer accounts (one argon2 hash shared by all) and a set of listed products
with stock that no run can exhaust serve the checkout and payment scenarios;
shipped cash-on-delivery orders, each with one SF Express parcel registered with
AfterShip, serve the tracking scenarios (made in SQL from the rows above).

    python -m bench.datagen --database-url URL [--products N] [--cooperatives N]
                            [--buyers N] [--checkout-products N] [--shipments N]
                            [--ledger-lines N]

`--ledger-lines` adds the ledger group's backlog of delivered lines (`bench/ledger.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from argon2 import PasswordHasher
from stdnum.cn import uscc

from app.settings import Settings
from bench.db import connect

PROVINCE = "98"
CITY = "01"
TOWNSHIPS_PER_COUNTY = 8
VILLAGES_PER_TOWNSHIP = 12
COOPERATIVES_PER_COUNTY = 100
PRODUCT_CHUNK = 5_000
# The checkout scenarios buy these products only. Stock far beyond any run (a run
# is capped at 2,000,000 requests of at most 3 lines of 2 units each) and within
# the int4 column: an order never fails for want of stock.
CHECKOUT_STOCK = 1_000_000_000
# Every k-th product is a checkout candidate, and a candidate that is listed gets
# the stock. About 85% are listed (88% active, of cooperatives 97% active); k is
# chosen as if only 75% were, so that enough candidates are listed at any scale.
CHECKOUT_LISTED_SHARE = 0.75
BUYER_PASSWORD = "bench-buyer-password"  # noqa: S105 (fictional accounts of a throwaway database)
# Tracking numbers of the generated parcels: "SF" + 13 digits, the current SF waybill
# shape, "98" (the fictional province) then a serial, so they are unique and fictional.
SHIPMENT_NUMBER_PREFIX = "SF98"
# The generated orders were placed over one day that ended two days before the run,
# and shipped two hours after: every scan the tracking scenarios report (at most a
# day and a half after shipping) lies in the past.
SHIPMENTS_PLACED_FROM = timedelta(days=3)
SHIPMENTS_PLACED_OVER = timedelta(days=1)
SHIPPED_AFTER = timedelta(hours=2)

# The alphabet of the organisation-code part of a credit code (no I, O, S, V, Z).
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


@dataclass(frozen=True, slots=True)
class Item:
    zh: str
    en: str
    category: str
    unit: str
    low_yuan: int
    high_yuan: int


ITEMS = (
    Item("河田鸡", "Hetian chicken", "poultry", "只", 88, 298),
    Item("土鸡蛋", "free-range eggs", "eggs", "盒", 29, 118),
    Item("土蜂蜜", "wild honey", "honey", "瓶", 39, 268),
    Item("槐花蜂蜜", "acacia honey", "honey", "瓶", 49, 198),
    Item("百花蜂蜜", "wildflower honey", "honey", "瓶", 35, 168),
    Item("蜂巢蜜", "honeycomb", "honey", "盒", 68, 288),
    Item("脐橙", "navel oranges", "fruit", "箱", 39, 128),
    Item("猕猴桃", "kiwifruit", "fruit", "箱", 45, 158),
    Item("百香果", "passion fruit", "fruit", "箱", 29, 99),
    Item("沃柑", "orah mandarins", "fruit", "箱", 35, 119),
    Item("高原苹果", "highland apples", "fruit", "箱", 45, 139),
    Item("香菇", "shiitake mushrooms", "fungi", "袋", 25, 128),
    Item("黑木耳", "black fungus", "fungi", "袋", 29, 99),
    Item("竹荪", "bamboo fungus", "fungi", "袋", 59, 299),
    Item("绿茶", "green tea", "tea", "罐", 58, 680),
    Item("红茶", "black tea", "tea", "罐", 58, 580),
    Item("白茶", "white tea", "tea", "饼", 88, 980),
    Item("大米", "rice", "grain", "袋", 39, 168),
    Item("小米", "millet", "grain", "袋", 25, 89),
    Item("荞麦面", "buckwheat noodles", "grain", "袋", 19, 69),
    Item("红薯粉条", "sweet potato noodles", "grain", "袋", 19, 59),
    Item("葛根粉", "kudzu root powder", "grain", "罐", 39, 158),
    Item("腊肉", "cured pork", "meat", "斤", 49, 199),
    Item("土猪香肠", "farm pork sausages", "meat", "斤", 45, 168),
    Item("牦牛肉干", "yak jerky", "meat", "袋", 68, 368),
    Item("核桃", "walnuts", "nuts", "袋", 29, 139),
    Item("板栗", "chestnuts", "nuts", "袋", 25, 89),
    Item("山茶油", "camellia oil", "oil", "瓶", 88, 498),
    Item("菜籽油", "rapeseed oil", "oil", "桶", 49, 168),
    Item("笋干", "dried bamboo shoots", "dried-vegetables", "袋", 29, 119),
    Item("辣椒酱", "chilli sauce", "condiments", "瓶", 12, 49),
    Item("花椒", "sichuan pepper", "condiments", "袋", 19, 99),
    Item("枸杞", "goji berries", "dried-fruit", "袋", 29, 199),
    Item("红枣", "red dates", "dried-fruit", "袋", 25, 119),
    Item("手工布鞋", "handmade cloth shoes", "handicrafts", "双", 69, 299),
    Item("竹编篮", "woven bamboo basket", "handicrafts", "个", 39, 199),
    Item("苗绣挂件", "Miao embroidery", "handicrafts", "件", 99, 1999),
)

# (Chinese, English, weight): "organic" is about one product in ten, as on real shelves.
MODIFIERS = (
    ("有机", "organic", 10),
    ("高山", "highland", 14),
    ("农家", "farmhouse", 18),
    ("生态", "eco-grown", 10),
    ("手工", "handmade", 8),
    ("野生", "wild-harvested", 6),
    ("新鲜", "fresh", 12),
    ("特级", "premium", 8),
    ("", "", 14),
)
SPECS = ("250g", "500g", "1kg", "2.5kg", "5斤装", "10斤装", "礼盒装", "家庭装", "")
SELLING_POINTS = (
    "产地直发",
    "现摘现发",
    "坏果包赔",
    "脱贫户自产",
    "扶贫产品",
    "无添加",
    "古法制作",
    "限量",
)
# Place-name syllables: (Chinese, pinyin), combined into county/township/village names.
HEADS = (
    ("青", "Qing"),
    ("石", "Shi"),
    ("竹", "Zhu"),
    ("松", "Song"),
    ("桃", "Tao"),
    ("杨", "Yang"),
    ("柳", "Liu"),
    ("龙", "Long"),
    ("凤", "Feng"),
    ("云", "Yun"),
    ("白", "Bai"),
    ("黄", "Huang"),
    ("金", "Jin"),
    ("长", "Chang"),
    ("安", "An"),
    ("平", "Ping"),
    ("上", "Shang"),
    ("下", "Xia"),
    ("东", "Dong"),
    ("西", "Xi"),
)
TAILS = (
    ("溪", "xi"),
    ("坪", "ping"),
    ("坑", "keng"),
    ("塘", "tang"),
    ("湾", "wan"),
    ("岭", "ling"),
    ("口", "kou"),
    ("坝", "ba"),
    ("岗", "gang"),
    ("田", "tian"),
    ("山", "shan"),
    ("水", "shui"),
)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何罗高林"
GIVEN = "建国明华志强秀英桂兰春梅德福永红金山海平"


@dataclass(frozen=True, slots=True)
class Place:
    code: str
    name: str
    pinyin: str
    county: str  # 12-digit code of the county it is in


@dataclass(slots=True)
class Summary:
    regions: int = 0
    cooperatives: int = 0
    products: int = 0
    counties: list[str] = field(default_factory=list)
    buyers: int = 0
    checkout_products: int = 0
    shipments: int = 0
    seconds: float = 0.0


def _place_name(rng: random.Random) -> tuple[str, str]:
    head, head_py = rng.choice(HEADS)
    tail, tail_py = rng.choice(TAILS)
    return head + tail, head_py + tail_py


def regions(cooperatives: int, rng: random.Random) -> tuple[list[tuple[Any, ...]], list[Place]]:
    """Rows of the region table (parents first) and the villages, for a cooperative count."""
    counties = max(1, math.ceil(cooperatives / COOPERATIVES_PER_COUNTY))
    province = PROVINCE.ljust(12, "0")
    city = (PROVINCE + CITY).ljust(12, "0")
    # code, name, level, parent_code, western, urban, rural_population, household_count
    rows: list[tuple[Any, ...]] = [
        (province, "虚构省", "province", None, True, False, None, None),
        (city, "虚构省示范市", "city", province, True, False, None, None),
    ]
    villages: list[Place] = []
    for c in range(1, counties + 1):
        county = f"{PROVINCE}{CITY}{c:02d}".ljust(12, "0")
        name, _ = _place_name(rng)
        rows.append((county, f"{name}县", "county", city, True, False, 150_000 + c * 997, None))
        for t in range(1, TOWNSHIPS_PER_COUNTY + 1):
            township = f"{county[:6]}{t:03d}000"
            # One township per county is 河田, whose chicken gives the 河田鸡 query its name.
            tname = "河田" if t == 1 else _place_name(rng)[0]
            rows.append((township, f"{tname}镇", "township", county, True, False, None, None))
            for v in range(1, VILLAGES_PER_TOWNSHIP + 1):
                code = f"{township[:9]}{v:03d}"
                vname, vpy = _place_name(rng)
                households = rng.randint(120, 900)
                rows.append(
                    (
                        code,
                        f"{vname}村",
                        "village",
                        township,
                        True,
                        False,
                        households * 4,
                        households,
                    )
                )
                villages.append(Place(code, vname, vpy, county))
    return rows, villages


def credit_code(county: str, serial: int) -> str:
    """A valid unified social credit code: 93 (farmers' cooperative), region, serial, check."""
    digits = []
    for _ in range(9):
        serial, rest = divmod(serial, len(USCC_ALPHABET))
        digits.append(USCC_ALPHABET[rest])
    body = "93" + county[:6] + "".join(reversed(digits))
    return body + str(uscc.calc_check_digit(body))


@dataclass(frozen=True, slots=True)
class Coop:
    id: uuid.UUID
    county: str
    village: Place
    specialties: tuple[Item, ...]
    active: bool


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def cooperatives(
    count: int, villages: list[Place], rng: random.Random
) -> tuple[list[tuple[Any, ...]], list[Coop]]:
    rows: list[tuple[Any, ...]] = []
    coops: list[Coop] = []
    by_county: dict[str, list[Place]] = {}
    for place in villages:
        by_county.setdefault(place.county, []).append(place)
    counties = sorted(by_county)
    for serial in range(count):
        county = counties[serial % len(counties)]
        village = rng.choice(by_county[county])
        specialties = tuple(rng.sample(ITEMS, rng.randint(1, 3)))
        kind = rng.choices(["cooperative", "household_shop", "enterprise"], [70, 20, 10])[0]
        if kind == "household_shop":
            name = f"{village.name}村{rng.choice(SURNAMES)}{rng.choice(GIVEN)}家庭农场"
        elif kind == "enterprise":
            name = f"{village.name}{specialties[0].zh}农业开发有限公司"
        else:
            name = f"{village.name}村{specialties[0].zh}专业合作社"
        # Most organisations trade; a few are suspended or closed, so the join filter matters.
        status = rng.choices(["active", "suspended", "closed"], [97, 2, 1])[0]
        coop = Coop(_uuid(rng), county, village, specialties, status == "active")
        linkages = rng.sample(["purchase_order", "employment", "dividend", "land_lease"], 2)
        rows.append(
            (
                coop.id,
                county,
                village.code,
                f"{name}{serial + 1}号",
                kind,
                credit_code(county, serial + 1),
                status,
                linkages,
                f"{village.name}村的{specialties[0].zh}生产组织，带动建档立卡户增收。",
                f"1399{serial:07d}",
            )
        )
        coops.append(coop)
    return rows, coops


def buyers(count: int, password_hash: str, rng: random.Random) -> list[tuple[Any, ...]]:
    """Buyer accounts in the column order of USER_COLUMNS, all with the same password.

    The hash is computed once by the caller: argon2 is slow on purpose, and the
    benchmark signs its own tokens instead of logging in.
    """
    rows: list[tuple[Any, ...]] = []
    for serial in range(1, count + 1):
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
        rows.append(
            (
                _uuid(rng),
                f"buyer{serial:06d}@bench.example.invalid",
                password_hash,
                "buyer",
                name,
                f"1370{serial:07d}",
                True,
            )
        )
    return rows


def _price_fen(item: Item, rng: random.Random) -> int:
    # Log-uniform within the item's range: many cheap listings, a long tail of dear ones.
    yuan = math.exp(rng.uniform(math.log(item.low_yuan), math.log(item.high_yuan)))
    return max(100, int(yuan * 100) // 10 * 10 - 10 * rng.randint(0, 1))


def checkout_stride(products_count: int, checkout_products: int) -> int:
    """Every how many products one is a checkout candidate (0: none)."""
    if checkout_products == 0:
        return 0
    return max(1, products_count // math.ceil(checkout_products / CHECKOUT_LISTED_SHARE))


def products(
    serials: range, coops: list[Coop], rng: random.Random, now: datetime, stride: int = 0
) -> Iterator[tuple[Any, ...]]:
    """Product rows in the column order of PRODUCT_COLUMNS; search_terms is left to PostgreSQL.

    Every `stride`-th product, when listed, gets CHECKOUT_STOCK: set here, after
    all its random draws, so that the rest of the catalogue is what it would be
    without checkout products, and no UPDATE after loading leaves dead rows and
    pending GIN entries behind for the catalogue's searches to wade through.
    """
    today = now.date()
    modifiers = [m[:2] for m in MODIFIERS]
    modifier_weights = [m[2] for m in MODIFIERS]
    for serial in serials:
        coop = rng.choice(coops)
        item = rng.choice(coop.specialties) if rng.random() < 0.7 else rng.choice(ITEMS)
        mod_zh, mod_en = rng.choices(modifiers, modifier_weights)[0]
        place = coop.village if rng.random() < 0.8 else rng.choice(coops).village
        spec = rng.choice(SPECS)
        point = rng.choice(SELLING_POINTS)
        title = f"{place.name}{mod_zh}{item.zh} {spec} {point}".replace("  ", " ").strip()
        description = (
            f"产自{place.name}村，{mod_zh}{item.zh}，由合作社组织脱贫户生产，{point}。"
            f"规格：{spec or '标准装'}，单位：{item.unit}。"
        )
        if rng.random() < 0.6:
            english = f"{mod_en} {item.en}".strip()
            description += f"\n{english[0].upper()}{english[1:]} from {place.pinyin} village."
        created = now - timedelta(seconds=rng.uniform(0, 365 * 86400))
        updated = created + timedelta(seconds=rng.uniform(0, (now - created).total_seconds()))
        status = rng.choices(["active", "draft", "archived"], [88, 7, 5])[0]
        stock = 0 if rng.random() < 0.12 else int(rng.lognormvariate(4.5, 1.2)) + 1
        if stride and serial % stride == 0 and status == "active" and coop.active:
            stock = CHECKOUT_STOCK
        sold = min(1_000_000, int(rng.paretovariate(1.2) * 10) - 10)
        roll = rng.random()
        if roll < 0.35:
            # About 30% hold a certificate in force, 5% one that has lapsed.
            valid_until: date | None = (
                today + timedelta(days=rng.randint(30, 720))
                if roll < 0.30
                else today - timedelta(days=rng.randint(1, 365))
            )
            number: str | None = f"FP{coop.county[:6]}-{created.year}-{serial + 1:07d}"
            issuer: str | None = "虚构省乡村振兴局"
            certified_at: datetime | None = created + timedelta(days=rng.randint(1, 30))
        else:
            valid_until = number = issuer = certified_at = None
        yield (
            _uuid(rng),
            coop.id,
            coop.county,
            title[:200],
            description,
            item.category,
            item.unit,
            _price_fen(item, rng),
            "CNY",
            stock,
            sold,
            sold,  # ranked as the periodic pass would have
            [f"https://img.example.invalid/products/{serial + 1}.jpg"],
            place.code,
            status,
            coop.active,
            number,
            issuer,
            valid_until,
            certified_at,
            created,
            updated,
        )


PRODUCT_COLUMNS = (
    "id",
    "cooperative_id",
    "county_code",
    "title",
    "description",
    "category",
    "unit",
    "price_fen",
    "currency",
    "stock",
    "sold_count",
    "ranked_sold_count",
    "image_urls",
    "origin_village_code",
    "status",
    "cooperative_active",  # mirrors the cooperative's status (set_cooperative_listing)
    "certificate_number",
    "certificate_issuer",
    "certificate_valid_until",
    "certified_at",
    "created_at",
    "updated_at",
)
USER_COLUMNS = ("id", "email", "password_hash", "role", "display_name", "phone", "is_active")
REGION_COLUMNS = (
    "code",
    "name",
    "level",
    "parent_code",
    "western",
    "urban",
    "rural_population",
    "household_count",
)
COOPERATIVE_COLUMNS = (
    "id",
    "county_code",
    "village_code",
    "name",
    "kind",
    "credit_code",
    "status",
    "linkages",
    "description",
    "contact_phone",
)


async def generate(
    url: str,
    *,
    products_count: int = 100_000,
    cooperatives_count: int = 1_000,
    seed: int = 98,
    jobs: int = 2,
    buyers_count: int = 2_000,
    checkout_products: int = 1_000,
    shipments_count: int = 0,
) -> Summary:
    """Fill a migrated, empty database; the same seed gives the same data, whatever `jobs`.

    Shipments are the exception: their ids are drawn by PostgreSQL (what they point
    at, their numbers and times are the same for the same seed).
    """
    if products_count < 1 or cooperatives_count < 1 or jobs < 1:
        raise ValueError("at least one product, one cooperative and one job")
    if buyers_count < 0 or checkout_products < 0 or shipments_count < 0:
        raise ValueError("buyer, checkout product and shipment counts cannot be negative")
    if shipments_count and not buyers_count:
        raise ValueError("shipments need buyers to have ordered them")
    started = time.perf_counter()
    rng = random.Random(seed)
    now = datetime.now(UTC)
    region_rows, villages = regions(cooperatives_count, rng)
    coop_rows, coops = cooperatives(cooperatives_count, villages, rng)
    # A generator of its own, so that adding buyers leaves the catalogue as it was.
    user_rows = buyers(
        buyers_count, PasswordHasher().hash(BUYER_PASSWORD), random.Random(seed * 7_919)
    )
    conn = await connect(url)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "regions", records=region_rows, columns=list(REGION_COLUMNS)
            )
            await conn.copy_records_to_table(
                "cooperatives", records=coop_rows, columns=list(COOPERATIVE_COLUMNS)
            )
            await conn.copy_records_to_table("users", records=user_rows, columns=list(USER_COLUMNS))
    finally:
        await conn.close()

    # PostgreSQL computes search_terms (search_grams) for every row, about 0.3 ms each:
    # that, not COPY, is the cost, so chunks are loaded over one connection per core.
    stride = checkout_stride(products_count, checkout_products)
    chunks: asyncio.Queue[int] = asyncio.Queue()
    for index in range(math.ceil(products_count / PRODUCT_CHUNK)):
        chunks.put_nowait(index)

    async def load() -> None:
        conn = await connect(url)
        try:
            while not chunks.empty():
                index = chunks.get_nowait()
                serials = range(
                    index * PRODUCT_CHUNK, min(products_count, (index + 1) * PRODUCT_CHUNK)
                )
                # One generator per chunk, seeded by its index: the data does not depend on
                # which connection loads which chunk.
                chunk_rng = random.Random(seed * 1_000_003 + index)
                await conn.copy_records_to_table(
                    "products",
                    records=products(serials, coops, chunk_rng, now, stride),
                    columns=list(PRODUCT_COLUMNS),
                )
        finally:
            await conn.close()

    await asyncio.gather(*(load() for _ in range(jobs)))
    conn = await connect(url)
    try:
        stocked = len(await checkout_product_ids(conn, checkout_products))
        shipped = await shipments(conn, shipments_count, now)
        # Fresh statistics, so the planner sees the data the benchmark queries.
        await conn.execute(
            "ANALYZE regions, cooperatives, products, users, orders, fulfilments, order_lines, "
            "payments, order_events, shipments"
        )
    finally:
        await conn.close()
    return Summary(
        regions=len(region_rows),
        cooperatives=len(coop_rows),
        products=products_count,
        counties=sorted({c.county for c in coops}),
        buyers=len(user_rows),
        checkout_products=stocked,
        shipments=shipped,
        seconds=time.perf_counter() - started,
    )


# One cash-on-delivery order per parcel, made as checkout and shipping make it:
# the order (shipped, unpaid), its one fulfilment (shipped), one line of a listed
# product of the fulfilment's cooperative (fee at the app's default rates), the
# cash payment awaiting collection, the order's history (checkout, then "parcel
# shipped") and the parcel, registered with AfterShip, pending, not polled (the
# bench gives the server no AfterShip API key). Products, buyers and villages are
# the generated ones, taken in turn in a stable order; ids are random (uuid4).
_PARCELS = """
CREATE TEMP TABLE bench_parcels ON COMMIT DROP AS
WITH listed AS (
    -- Numbered rows, not arrays: an array in every generated row would be copied
    -- into each of them (gigabytes of temporary files at 100,000 products).
    SELECT id, row_number() OVER (ORDER BY id) AS i FROM products
    WHERE status = 'active' AND cooperative_active
), buyers AS (
    SELECT id, row_number() OVER (ORDER BY email) AS i FROM users
    WHERE role = 'buyer' AND is_active
), villages AS (
    SELECT code, row_number() OVER (ORDER BY code) AS i FROM regions WHERE level = 'village'
), sizes AS (
    SELECT (SELECT count(*) FROM listed) AS products, (SELECT count(*) FROM buyers) AS buyers,
           (SELECT count(*) FROM villages) AS villages
), picked AS (
    SELECT n,
           l.id AS product_id,
           b.id AS buyer_id,
           v.code AS village_code,
           $2::timestamptz + (n - 1) * ($3::interval / $1::int) AS placed_at,
           1 + n % 2 AS quantity
    FROM generate_series(1, $1::int) AS n
    CROSS JOIN sizes
    JOIN listed l ON l.i = 1 + (n - 1) % sizes.products
    JOIN buyers b ON b.i = 1 + (n - 1) % sizes.buyers
    JOIN villages v ON v.i = 1 + (n - 1) % sizes.villages
), priced AS (
    SELECT picked.*, p.cooperative_id, p.county_code, p.title, p.unit, p.price_fen, p.currency,
           p.price_fen * picked.quantity AS gross_fen,
           coalesce(p.certificate_number <> ''
                    AND p.certificate_valid_until >= picked.placed_at::date, false) AS certified
    FROM picked JOIN products p ON p.id = picked.product_id
)
SELECT priced.*,
       priced.placed_at + $4::interval AS shipped_at,
       CASE WHEN priced.certified THEN $6::int ELSE $5::int END AS fee_bp,
       priced.gross_fen * CASE WHEN priced.certified THEN $6::int ELSE $5::int END / 10000
           AS fee_fen,
       gen_random_uuid() AS order_id,
       gen_random_uuid() AS fulfilment_id,
       gen_random_uuid() AS line_id,
       gen_random_uuid() AS payment_id,
       gen_random_uuid() AS shipment_id,
       $7::text || lpad(priced.n::text, 11, '0') AS tracking_number,
       jsonb_build_object(
           'recipient', u.display_name,
           'phone', u.phone,
           'province', '虚构省',
           'city', '虚构省示范市',
           'county', c.name,
           'street', t.name || v.name || ' ' || (priced.n % 9 + 1) || ' 组 '
               || (priced.n % 97 + 1) || ' 号',
           'region_code', v.code,
           'postal_code', NULL
       ) AS address
FROM priced
JOIN users u ON u.id = priced.buyer_id
JOIN regions v ON v.code = priced.village_code
JOIN regions t ON t.code = v.parent_code
JOIN regions c ON c.code = t.parent_code
"""
_PARCEL_ROWS = (
    """
    INSERT INTO orders (id, buyer_id, status, payment_method, payment_status, currency,
                        items_fen, fee_fen, total_fen, paid_fen, refunded_fen, delivery_type,
                        delivery_address, settlement_hold, created_at, updated_at)
    SELECT order_id, buyer_id, 'shipped', 'cod', 'unpaid', currency, gross_fen, fee_fen,
           gross_fen, 0, 0, 'home', address, false, placed_at, shipped_at
    FROM bench_parcels ORDER BY n
    """,
    """
    INSERT INTO fulfilments (id, order_id, cooperative_id, county_code, status, items_fen,
                             created_at, updated_at)
    SELECT fulfilment_id, order_id, cooperative_id, county_code, 'shipped', gross_fen,
           placed_at, shipped_at
    FROM bench_parcels ORDER BY n
    """,
    """
    INSERT INTO order_lines (id, order_id, fulfilment_id, position, product_id, cooperative_id,
                             county_code, title, unit, unit_price_fen, quantity, gross_fen,
                             certified, fee_bp, fee_fen, share_set_id, shares, shares_at,
                             refunded_quantity, refunded_fen)
    SELECT line_id, order_id, fulfilment_id, 0, product_id, cooperative_id, county_code, title,
           unit, price_fen, quantity, gross_fen, certified, fee_bp, fee_fen, NULL, '[]'::jsonb,
           placed_at, 0, 0
    FROM bench_parcels ORDER BY n
    """,
    """
    INSERT INTO payments (id, order_id, provider, state, amount_fen, currency, failures,
                          created_at, updated_at)
    SELECT payment_id, order_id, 'cash', 'pending', gross_fen, currency, 0, placed_at, placed_at
    FROM bench_parcels ORDER BY n
    """,
    """
    INSERT INTO order_events (order_id, from_status, to_status, reason, actor_id, at)
    SELECT order_id, NULL, 'confirmed', 'checkout', buyer_id, placed_at
    FROM bench_parcels
    UNION ALL
    SELECT order_id, 'confirmed', 'shipped', 'parcel shipped', NULL, shipped_at
    FROM bench_parcels
    """,
    """
    INSERT INTO shipments (id, fulfilment_id, order_id, cooperative_id, county_code, carrier,
                           tracking_number, provider, status, poll_failures, created_at,
                           updated_at)
    SELECT shipment_id, fulfilment_id, order_id, cooperative_id, county_code, 'sf',
           tracking_number, 'aftership', 'pending', 0, shipped_at, shipped_at
    FROM bench_parcels ORDER BY n
    """,
)


async def shipments(conn: asyncpg.Connection, count: int, now: datetime) -> int:
    """`count` shipped cash-on-delivery orders with one pending SF parcel each; answers how many.

    Needs the products, buyers and regions loaded first. The stock the orders
    bought is not taken from the products: their sale is long past, and the
    catalogue stays what the other scenarios measure.
    """
    if count <= 0:
        return 0
    if count >= 10**11:
        raise ValueError("at most 99,999,999,999 shipments (11 digits of tracking serial)")
    fields = Settings.model_fields
    async with conn.transaction():
        await conn.execute(
            _PARCELS,
            count,
            now - SHIPMENTS_PLACED_FROM,
            SHIPMENTS_PLACED_OVER,
            SHIPPED_AFTER,
            int(fields["platform_fee_bp"].default),
            int(fields["platform_fee_bp_certified"].default),
            SHIPMENT_NUMBER_PREFIX,
        )
        made = int(await conn.fetchval("SELECT count(*) FROM bench_parcels"))
        if made != count:
            raise RuntimeError(
                f"{made} of {count} shipments: no listed product, no buyer or no village to use"
            )
        for statement in _PARCEL_ROWS:
            await conn.execute(statement)
    return made


async def checkout_product_ids(conn: asyncpg.Connection, count: int) -> list[uuid.UUID]:
    """The first `count` listed products stocked for checkout, in a stable order.

    Stock moves during a run; stock and reservations together stay near CHECKOUT_STOCK.
    """
    rows = await conn.fetch(
        "SELECT id FROM products WHERE status = 'active' AND cooperative_active "
        "AND stock + reserved >= $1 ORDER BY id LIMIT $2",
        CHECKOUT_STOCK // 2,
        count,
    )
    return [row["id"] for row in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a migrated, empty database")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--cooperatives", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=98)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="load connections")
    parser.add_argument("--buyers", type=int, default=2_000, help="buyer accounts")
    parser.add_argument(
        "--checkout-products", type=int, default=1_000, help="listed products stocked for checkout"
    )
    parser.add_argument(
        "--shipments", type=int, default=0, help="shipped orders with a parcel to track"
    )
    parser.add_argument(
        "--ledger-lines", type=int, default=0, help="delivered lines awaiting recognition"
    )
    args = parser.parse_args(argv)
    summary = asyncio.run(
        generate(
            args.database_url,
            products_count=args.products,
            cooperatives_count=args.cooperatives,
            seed=args.seed,
            jobs=args.jobs,
            buyers_count=args.buyers,
            checkout_products=args.checkout_products,
            shipments_count=args.shipments,
        )
    )
    print(
        f"{summary.regions} regions, {summary.cooperatives} cooperatives, "
        f"{summary.products} products ({summary.checkout_products} stocked for checkout), "
        f"{summary.buyers} buyers, {summary.shipments} shipments in {summary.seconds:.1f} s"
    )
    if args.ledger_lines > 0:
        from bench import ledger

        backlog = asyncio.run(
            ledger.backlog(
                args.database_url, args.ledger_lines, seed=args.seed, now=datetime.now(UTC)
            )
        )
        print(
            f"ledger backlog: {backlog['lines']} lines, {backlog['orders']} orders, "
            f"{backlog['households']} households in {backlog['load_s']} s"
        )


if __name__ == "__main__":
    main()
