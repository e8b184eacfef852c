"""The demo's Taobao-village candidate: online shops, and a cooperative's bulk sales to canteens.

The test asks a village for 10 million yuan of e-commerce sales a year and active
stores in 10 % of its households (or 100 stores). A county of 200 file cards cannot
come near that on household retail, so in 白水村 the fruit cooperative also sells its
own orchard's fruit to canteens by the thousand boxes (the 832 platform), and
returnees run online shops, as many as the year's store share asks for. The orchard's
products carry no supply shares (the orchard stands on land the cooperative leases;
households earn rent and wages there, off the platform), so the bulk sales leave the
households' ledger income and the flag rules alone. They are planned last, from what
the village's other sales came to: just under the sales figure last year, just over
it this year.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services import money
from services.assessment.models import Threshold
from services.catalog import service as catalog
from services.catalog.models import ProductStatus
from services.cooperatives import service as cooperatives
from services.cooperatives.models import Cooperative, CooperativeKind
from services.demo import data
from services.demo.catalogue import credit_code, make_products, split_shares
from services.demo.people import person_name
from services.demo.trade import FEES, Item, Plan, Seller, Trader
from services.households.models import Sex
from services.ledger import service as ledger
from services.orders.models import Fulfilment, FulfilmentStatus, Order, OrderLine
from services.users.models import Role, User
from services.users.service import NewStaff, create_staff

# Sales as a share of the year's Taobao figure that the bulk orders fill up to.
SALES_TARGET = {0: 1.012, 1: 0.96}  # by years before the current one
BULK_BOXES = (1_500, 6_000)
SHOP_ORDERS = 2  # a shop's orders per year, besides its latest one
MAX_SHOPS = 40
MAX_BULK_ORDERS = 80  # a year's; the default figure needs about 35


@dataclass(frozen=True, slots=True)
class Shops:
    sellers: list[Seller]
    products: int
    products_with_shares: int
    memberships: int


def shops_needed(threshold: Threshold, village: data.Village, stores: int) -> int:
    """New shops that bring the village's stores to the year's store share (and no further)."""
    wanted = math.ceil(village.household_count * threshold.taobao_store_share_bp / 10_000)
    return max(0, min(wanted, MAX_SHOPS) - stores)


async def open_shops(
    session: AsyncSession,
    rng: random.Random,
    *,
    admin: User,
    officer: User,
    count: int,
    neighbours: list[uuid.UUID],
    taken: set[str],
    shares_from: datetime,
) -> Shops:
    """`count` online shops in the village, each with a manager and two products.

    Their owners are families off the poverty register; about half also sell a poor
    neighbour's goods, who then holds a supply share of one product.
    """
    village = data.VILLAGE_BY_NAME[data.TAOBAO_VILLAGE]
    names: set[str] = set()
    shops = []
    products_made = with_shares = memberships = 0
    for index in range(1, count + 1):
        surname = rng.choice(village.clans) if rng.random() < 0.7 else rng.choice(data.SURNAMES)
        sex = rng.choice(list(Sex))
        owner = person_name(rng, surname, sex, rng.randint(1985, 1999))
        while f"{village.name}{owner}的网店" in names:
            owner = person_name(rng, surname, sex, rng.randint(1985, 1999))
        name = f"{village.name}{owner}的网店"
        names.add(name)
        shop = await cooperatives.create_cooperative(
            session,
            admin,
            cooperatives.NewCooperative(
                name=name,
                kind=CooperativeKind.household_shop,
                credit_code=credit_code(rng, CooperativeKind.household_shop),
                village_code=village.code,
                linkages=list(data.SHOP.linkages),
                description=data.SHOP.description,
            ),
        )
        manager = await create_staff(
            session,
            NewStaff(
                email=data.shop_email(index),
                password=data.MANAGER_PASSWORD,
                role=Role.manager,
                display_name=owner,
                cooperative_id=shop.id,
            ),
        )
        members = rng.sample(neighbours, k=min(len(neighbours), rng.choice((0, 0, 1, 1, 2))))
        for household_id in members:
            await cooperatives.add_member(
                session,
                officer,
                shop.id,
                cooperatives.NewMember(
                    household_id=household_id,
                    joined_on=date(shares_from.year - rng.randint(0, 2), rng.randint(1, 11), 1),
                    linkages=list(data.SHOP.linkages),
                ),
            )
        memberships += len(members)
        products = []
        for new_product in make_products(rng, data.SHOP, data.SHOP.products, taken):
            # A shop lists what it sells: nothing in draft, nothing sold out.
            listed = replace(
                new_product, status=ProductStatus.active, stock=max(new_product.stock, 30)
            )
            products.append(await catalog.create_product(session, manager, shop.id, listed))
        products_made += len(products)
        shares = split_shares(rng, members, most=2)
        if shares:
            await catalog.set_shares(session, manager, products[0].id, shares, now=shares_from)
            with_shares += 1
        shops.append(Seller(shop.id, shop.kind, village.code, manager))
    return Shops(shops, products_made, with_shares, memberships)


async def open_orchard(session: AsyncSession, seller: Seller) -> list[uuid.UUID]:
    """The cooperative's bulk products, without supply shares."""
    products = []
    for item in data.ORCHARD:
        product = await catalog.create_product(
            session,
            seller.manager,
            seller.id,
            catalog.NewProduct(
                title=item.title,
                category="fruit",
                unit=item.unit,
                price_fen=item.price_yuan * 100,
                description=item.description,
                stock=2_000,
                origin_village_code=seller.village_code,
                status=ProductStatus.active,
            ),
        )
        products.append(product.id)
    return products


def shop_plans(trader: Trader, stores: list[Seller]) -> list[Plan]:
    """The shops' own orders, and for every store of the village one in the last days,
    so that each counts as active (a paid order in the trailing 30 days)."""
    plans = []
    for store in stores:
        items = [i for i in trader.items if i.seller.id == store.id]
        if not items:
            continue
        if store.kind is CooperativeKind.household_shop:
            plans += [
                trader.retail(year, items=items)
                for year in trader.calendar.years
                for _ in range(SHOP_ORDERS)
            ]
        latest = trader.retail(trader.calendar.this_year, items=items)
        latest.delivered_at = trader.calendar.now - timedelta(days=trader.rng.uniform(2, 12))
        latest.placed_at = latest.delivered_at - timedelta(days=trader.rng.uniform(1, 3))
        plans.append(latest)
    return plans


async def village_sales(session: AsyncSession, village_code: str) -> dict[int, int]:
    """What recognition will enter for the village's delivered, paid fulfilments, by year."""
    rows = (
        await session.execute(
            select(
                Fulfilment.delivered_at,
                Fulfilment.updated_at,
                Order.payment_method,
                Order.paid_at,
                func.array_agg(OrderLine.gross_fen).label("gross"),
                func.array_agg(OrderLine.fee_fen).label("fees"),
                func.array_agg(OrderLine.refunded_fen).label("refunded"),
            )
            .join(Order, Order.id == Fulfilment.order_id)
            .join(OrderLine, OrderLine.fulfilment_id == Fulfilment.id)
            .join(Cooperative, Cooperative.id == Fulfilment.cooperative_id)
            .where(
                Cooperative.village_code == village_code,
                Fulfilment.status == FulfilmentStatus.delivered,
                Order.paid_at.is_not(None),
            )
            .group_by(Fulfilment.id, Order.id)
        )
    ).all()
    sales: dict[int, int] = {}
    for row in rows:
        year = ledger.assessment_year(ledger.recognition_time(row, row))
        net = sum(
            ledger.net_after(g, f, r)
            for g, f, r in zip(row.gross, row.fees, row.refunded, strict=True)
        )
        sales[year] = sales.get(year, 0) + net
    return sales


def bulk_plans(
    trader: Trader, orchard: list[Item], *, year: int, threshold: Threshold, sold_fen: int
) -> list[Plan]:
    """Canteens' bulk orders that bring the year's sales to its target, the last one sized
    to land on it."""
    ago = trader.calendar.this_year - year
    target = round(threshold.taobao_sales_yuan * 100 * SALES_TARGET[min(ago, 1)])
    gap = target - sold_fen
    plans: list[Plan] = []
    # An admin's much larger figure is left unreached rather than loading for minutes.
    while gap > 0 and len(plans) < MAX_BULK_ORDERS:
        item = trader.rng.choice(orchard)
        boxes = trader.rng.randint(*BULK_BOXES)
        if _net(item, boxes) >= gap:
            boxes = math.ceil(gap / item.price_fen)
            while _net(item, boxes) < gap:
                boxes += 1
        gap -= _net(item, boxes)
        plans.append(trader.canteen(year, lines=[(item.id, boxes)]))
    return plans


def _net(item: Item, boxes: int) -> int:
    gross = item.price_fen * boxes
    return gross - money.fee(gross, FEES.for_line(False))
