"""Load the demo county through the service functions, so every rule applies to it too.

First the county (regions, sites, file cards, organisations, catalogue), then two years
of trade over it (`trade`, `village`) and what officers made of it (`outcomes`): one
seeded generator, one transaction, and only when the county is not there yet.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.catalog import service as catalog
from services.cooperatives import service as cooperatives
from services.cooperatives.models import Cooperative, CooperativeKind
from services.demo import data, outcomes, village
from services.demo.catalogue import credit_code, make_certificate, make_products, split_shares
from services.demo.people import DemoHousehold, IdNumbers, cadre_pool, make_household, person_name
from services.demo.trade import CANTEEN_ORDERS, RETAIL_ORDERS, Calendar, Plan, Seller, Stage, Trader
from services.households import service as households
from services.households.models import Labour, Sex
from services.ledger import service as ledger
from services.ledger.models import AttributionFlag, FlagStatus
from services.regions import service as regions
from services.regions.models import Region, ServiceSite
from services.users.models import Role, User
from services.users.service import NewStaff, create_staff

HOUSEHOLDS = 200
POOR_SHARE = 0.9
CERTIFIED = 33
EXPIRED = 2
WITH_SHARES = 0.85
_WORKING = frozenset({Labour.ordinary, Labour.skilled})
REFUNDS = 4
BUYER_SCOPE = "own orders"


@dataclass(frozen=True, slots=True)
class DemoAccount:
    role: str
    email: str
    password: str
    scope: str


@dataclass(frozen=True, slots=True)
class DemoSummary:
    created: bool
    county_code: str
    county_name: str
    regions: int = 0
    sites: int = 0
    organisations: dict[str, int] = field(default_factory=dict)
    households: int = 0
    poor_households: int = 0
    persons: int = 0
    memberships: int = 0
    products: int = 0
    certified: int = 0
    expired_certificates: int = 0
    products_with_shares: int = 0
    incomes: int = 0
    cadres: int = 0
    accounts: tuple[DemoAccount, ...] = ()
    trade: TradeSummary | None = None


@dataclass(frozen=True, slots=True)
class TradeSummary:
    """Two years of orders and what followed from them."""

    years: tuple[int, int]
    thresholds_written: tuple[int, ...]
    buyers: int
    canteens: int
    shops: int
    orders: int
    delivered: int
    card_orders: int
    under_way: int
    cancelled: int
    refunds: int
    recognised_lines: int
    open_flags: int
    counted_flags: int
    incomes: int
    exited: int
    monitored: int
    taobao_village: str


async def load_demo(
    session: AsyncSession, *, pii_key: bytes, today: date, now: datetime
) -> DemoSummary:
    """Create the demo county once; when it exists already, change nothing."""
    county_code, county_name = data.COUNTY
    if await session.get(Region, county_code) is not None:
        return DemoSummary(
            created=False,
            county_code=county_code,
            county_name=county_name,
            accounts=await _existing_accounts(session),
        )
    # Seeded so that every run builds the same county; nothing here is a secret.
    rng = random.Random(data.SEED)  # noqa: S311
    accounts: list[DemoAccount] = []

    admin = await _staff(session, data.ADMIN)
    accounts.append(_account(data.ADMIN, "everywhere"))
    region_count = await _regions(session)
    sites = [
        await regions.create_site(
            session,
            regions.NewSite(
                village_code=data.VILLAGE_BY_NAME[site.village].code,
                kind=site.kind,
                name=site.name,
                address=site.address,
            ),
        )
        for site in data.SITES
    ]
    officer = await _staff(session, data.OFFICER, county_code=county_code)
    accounts.append(_account(data.OFFICER, _county_scope(county_code)))
    operator = await _staff(session, data.OPERATOR, site_id=sites[0].id)
    accounts.append(_account(data.OPERATOR, sites[0].name))

    cards = _cards(rng, today)
    household_ids = [
        await _register(session, officer, card, pii_key=pii_key, today=today) for card in cards
    ]
    organisations = [
        await _organisation(session, rng, admin, officer, index, spec, cards, household_ids)
        for index, spec in enumerate(data.ORGANISATIONS, start=1)
    ]
    accounts += [o.account for o in organisations]
    poor_ids = {household_ids[i] for i, card in enumerate(cards) if card.card.poor}
    calendar = Calendar(now)
    # Shares in force from before the first demo order: each sale snapshots them when paid.
    shares_from = calendar.start(calendar.years[0]) - timedelta(days=31)
    taken: set[str] = set()
    products, with_shares = await _products(
        session, rng, organisations, poor_ids, taken=taken, shares_from=shares_from
    )
    chosen = rng.sample(products, k=CERTIFIED)
    for serial, product_id in enumerate(chosen, start=1):
        certificate = make_certificate(rng, serial, today, expired=serial <= EXPIRED)
        await catalog.certify(session, officer, product_id, certificate)

    accounts.append(_account(data.DEMO_BUYER, BUYER_SCOPE))
    trade, extra = await _trade(
        session,
        rng,
        calendar,
        staff=(admin, officer, operator),
        site_id=sites[0].id,
        organisations=organisations,
        households=list(zip(household_ids, cards, strict=True)),
        taken=taken,
        shares_from=shares_from,
        today=today,
    )

    kinds = Counter(o.spec.kind.value for o in organisations)
    kinds[CooperativeKind.household_shop.value] += trade.shops
    return DemoSummary(
        created=True,
        county_code=county_code,
        county_name=county_name,
        regions=region_count,
        sites=len(sites),
        organisations=dict(sorted(kinds.items())),
        households=len(cards),
        poor_households=len(poor_ids),
        persons=sum(len(card.card.members) for card in cards),
        memberships=sum(len(o.members) for o in organisations) + extra.memberships,
        products=len(products) + extra.products,
        certified=CERTIFIED,
        expired_certificates=EXPIRED,
        products_with_shares=with_shares + extra.products_with_shares,
        incomes=sum(len(card.incomes) for card in cards) + trade.incomes,
        cadres=sum(len(card.cadres) for card in cards),
        accounts=tuple(accounts),
        trade=trade,
    )


@dataclass(frozen=True, slots=True)
class _Extra:
    """What trade added to the catalogue: the Taobao village's shops and orchard."""

    products: int
    products_with_shares: int
    memberships: int


async def _trade(
    session: AsyncSession,
    rng: random.Random,
    calendar: Calendar,
    *,
    staff: tuple[User, User, User],
    site_id: uuid.UUID,
    organisations: list[_Loaded],
    households: list[tuple[uuid.UUID, DemoHousehold]],
    taken: set[str],
    shares_from: datetime,
    today: date,
) -> tuple[TradeSummary, _Extra]:
    """Two years of orders over the catalogue, recognised, and what officers did about them."""
    admin, officer, operator = staff
    this = calendar.this_year
    written, thresholds = await outcomes.write_thresholds(session, admin, calendar)
    sellers = [
        Seller(o.id, o.spec.kind, data.VILLAGE_BY_NAME[o.spec.village].code, o.manager)
        for o in organisations
    ]
    home = data.VILLAGE_BY_NAME[data.TAOBAO_VILLAGE]
    stores = [s for s in sellers if s.village_code == home.code]
    shops = await village.open_shops(
        session,
        rng,
        admin=admin,
        officer=officer,
        count=village.shops_needed(thresholds[this], home, len(stores)),
        neighbours=[h for h, c in households if c.card.poor and c.card.village_code == home.code],
        taken=taken,
        shares_from=shares_from,
    )
    fruit = next(s for s in stores if s.kind is CooperativeKind.cooperative)
    orchard = await village.open_orchard(session, fruit)

    trader = Trader(session, rng, calendar, operator=operator, site_id=site_id)
    await trader.open([*sellers, *shops.sellers], leave_out=set(orchard))
    await trader.register_buyers()
    rank = {household_id: index for index, (household_id, _) in enumerate(households)}
    plans = [trader.retail(year) for year in calendar.years for _ in range(RETAIL_ORDERS)]
    plans += [trader.canteen(year) for year in calendar.years for _ in range(CANTEEN_ORDERS)]
    plans += village.shop_plans(trader, [*stores, *shops.sellers])
    plans += trader.unfinished()
    cards = {household_id: card.card for household_id, card in households}
    insider = trader.insider(
        this,
        *rng.choice(
            [
                (item, cards[household_id])
                for item in trader.items
                if item.seller.village_code != home.code
                for household_id in sorted(item.suppliers, key=rank.__getitem__)
                if cards[household_id].phone
            ]
        ),
    )
    await _carry(trader, [*plans, insider])
    sold = await village.village_sales(session, home.code)
    await _carry(
        trader,
        [
            plan
            for year in calendar.years
            for plan in village.bulk_plans(
                trader,
                [trader.catalogue[product] for product in orchard],
                year=year,
                threshold=thresholds[year],
                sold_fen=sold.get(year, 0),
            )
        ],
    )

    # Each delivery's outbox job would recognise it; the backlog run does the same in
    # batches, with the flag rules and payouts following every batch.
    recognised = 0
    while lines := await ledger.recognise_due(session, now=calendar.now):
        recognised += lines
    refundable = [
        plan
        for plan in trader.carried
        if plan.stage is Stage.delivered
        and not plan.card
        and plan.address is not None
        and plan is not insider
        and plan.delivered_at >= calendar.start(this)
        and plan.buyer in trader.people
        and trader.catalogue[plan.lines[0][0]].seller.village_code != home.code
    ]
    refunds = rng.sample(refundable, k=min(REFUNDS, len(refundable)))
    for plan in refunds:
        await trader.refund(plan, rng.choice(data.REFUND_REASONS))
    incomes = await outcomes.record_incomes(
        session, rng, officer, households, calendar=calendar, today=today
    )
    counted = await outcomes.rule_on_flags(
        session, officer, {c.id for c in trader.canteens}, rank=rank, now=calendar.now
    )
    exited, monitored = await outcomes.exits(session, rng, officer, calendar=calendar, rank=rank)
    open_flags = await session.scalar(
        select(func.count())
        .select_from(AttributionFlag)
        .where(
            AttributionFlag.county_code == data.COUNTY[0],
            AttributionFlag.status == FlagStatus.open,
        )
    )
    stages = Counter(plan.stage for plan in trader.carried)
    summary = TradeSummary(
        years=calendar.years,
        thresholds_written=tuple(written),
        buyers=len(trader.people),
        canteens=len(trader.canteens),
        shops=len(shops.sellers),
        orders=len(trader.carried),
        delivered=stages[Stage.delivered],
        card_orders=sum(plan.card for plan in trader.carried),
        under_way=stages[Stage.shipped] + stages[Stage.ready],
        cancelled=stages[Stage.cancelled] + stages[Stage.refused],
        refunds=len(refunds),
        recognised_lines=recognised,
        open_flags=open_flags or 0,
        counted_flags=counted,
        incomes=incomes,
        exited=len(exited),
        monitored=len(monitored),
        taobao_village=home.name,
    )
    extra = _Extra(
        products=shops.products + len(orchard),
        products_with_shares=shops.products_with_shares,
        memberships=shops.memberships,
    )
    return summary, extra


async def _carry(trader: Trader, plans: list[Plan]) -> None:
    for plan in sorted(plans, key=lambda p: p.placed_at):
        await trader.carry(plan)


async def _register(
    session: AsyncSession, officer: User, card: DemoHousehold, *, pii_key: bytes, today: date
) -> uuid.UUID:
    household = await households.create_household(
        session, officer, card.card, pii_key=pii_key, today=today
    )
    for cadre in card.cadres:
        await households.add_cadre(session, officer, household.id, cadre)
    for income in card.incomes:
        await households.add_income(session, officer, household.id, income, today=today)
    return household.id


@dataclass(frozen=True, slots=True)
class _Loaded:
    spec: data.Organisation
    id: uuid.UUID
    manager: User
    account: DemoAccount
    members: list[uuid.UUID]


async def _organisation(
    session: AsyncSession,
    rng: random.Random,
    admin: User,
    officer: User,
    index: int,
    spec: data.Organisation,
    cards: list[DemoHousehold],
    household_ids: list[uuid.UUID],
) -> _Loaded:
    """An organisation, its manager's account and its member households."""
    positions = _pick_members(rng, spec, cards)
    owner = cards[positions[0]].card.members[0].name
    name = spec.name.format(surname=owner[0])
    organisation = await cooperatives.create_cooperative(
        session,
        admin,
        cooperatives.NewCooperative(
            name=name,
            kind=spec.kind,
            credit_code=credit_code(rng, spec.kind),
            village_code=data.VILLAGE_BY_NAME[spec.village].code,
            linkages=list(spec.linkages),
            description=spec.description,
        ),
    )
    manager_name = (
        owner  # a household shop is run by its own household
        if spec.kind is CooperativeKind.household_shop
        else person_name(rng, rng.choice(data.SURNAMES), rng.choice(list(Sex)), 1975)
    )
    account = data.Account(
        Role.manager, data.manager_email(index), data.MANAGER_PASSWORD, manager_name
    )
    manager = await _staff(session, account, cooperative_id=organisation.id)
    members = [household_ids[p] for p in positions]
    for household_id in members:
        await cooperatives.add_member(
            session,
            officer,
            organisation.id,
            cooperatives.NewMember(
                household_id=household_id,
                joined_on=date(rng.randint(2016, 2020), rng.randint(1, 12), rng.randint(1, 28)),
                linkages=rng.sample(spec.linkages, k=rng.randint(1, len(spec.linkages))),
            ),
        )
    return _Loaded(spec, organisation.id, manager, _account(account, name), members)


async def _products(
    session: AsyncSession,
    rng: random.Random,
    organisations: list[_Loaded],
    poor_ids: set[uuid.UUID],
    *,
    taken: set[str],
    shares_from: datetime,
) -> tuple[list[uuid.UUID], int]:
    """Every organisation's products, most with supply shares; their ids and how many shared.

    Titles used are added to `taken`.
    """
    products: list[uuid.UUID] = []
    with_shares = 0
    for organisation in organisations:
        spec, manager = organisation.spec, organisation.manager
        for new_product in make_products(rng, spec, spec.products, taken):
            product = await catalog.create_product(session, manager, organisation.id, new_product)
            products.append(product.id)
            if rng.random() >= WITH_SHARES:
                continue
            poor_members = [m for m in organisation.members if m in poor_ids]
            # Shares are what turn sales into a poor household's assessed income.
            use_poor = poor_members and rng.random() < 0.9
            suppliers = poor_members if use_poor else organisation.members
            most = 2 if spec.kind is CooperativeKind.household_shop else 4
            shares = split_shares(rng, suppliers, most=most)
            if not shares:
                continue
            await catalog.set_shares(session, manager, product.id, shares, now=shares_from)
            with_shares += 1
    return products, with_shares


async def _regions(session: AsyncSession) -> int:
    """Province and city may exist already (other fictional counties); the rest may not."""
    villages = data.VILLAGES
    wanted = [
        regions.NewRegion(code=data.PROVINCE[0], name=data.PROVINCE[1], western=True),
        regions.NewRegion(code=data.CITY[0], name=data.CITY[1]),
        # Only these villages are modelled, so the county's population is theirs: the
        # incidence figures of county and villages then agree with each other.
        regions.NewRegion(
            code=data.COUNTY[0],
            name=data.COUNTY[1],
            rural_population=sum(v.rural_population for v in villages),
            household_count=sum(v.household_count for v in villages),
        ),
        *(regions.NewRegion(code=code, name=name) for code, name in data.TOWNSHIPS.items()),
        *(
            regions.NewRegion(
                code=v.code,
                name=v.name,
                rural_population=v.rural_population,
                household_count=v.household_count,
            )
            for v in villages
        ),
    ]
    created = 0
    for region in wanted:
        shared = region.code in (data.PROVINCE[0], data.CITY[0])
        if shared and await session.get(Region, region.code) is not None:
            continue
        await regions.create_region(session, region)
        created += 1
    return created


def _cards(rng: random.Random, today: date) -> list[DemoHousehold]:
    ids = IdNumbers(data.REGION6)
    pool = cadre_pool(rng, 30)
    weights = [v.household_count for v in data.VILLAGES]
    return [
        make_household(
            rng,
            ids,
            rng.choices(data.VILLAGES, weights)[0],
            poor=rng.random() < POOR_SHARE,
            cadres=pool,
            today=today,
        )
        for _ in range(HOUSEHOLDS)
    ]


def _pick_members(
    rng: random.Random, spec: data.Organisation, cards: list[DemoHousehold]
) -> list[int]:
    """Positions in `cards` of an organisation's members, its owner first for a shop.

    Neighbours join most: the same village, then the same township.
    """
    home = data.VILLAGE_BY_NAME[spec.village].code
    low, high = spec.members
    count = rng.randint(low, high)
    if spec.kind is CooperativeKind.household_shop:
        neighbours = [i for i, c in enumerate(cards) if c.card.village_code == home]
        # Someone has to run the shop: a household whose head can still work.
        able = [i for i in neighbours if cards[i].card.members[0].labour in _WORKING]
        owner = rng.choice(able or neighbours)
        rest = [i for i in neighbours if i != owner]
        return [owner, *rng.sample(rest, k=min(count - 1, len(rest)))]

    def weight(card: DemoHousehold) -> float:
        village = card.card.village_code
        return 4.0 if village == home else 2.0 if village[:9] == home[:9] else 0.5

    # Weighted sampling without replacement (Efraimidis-Spirakis keys).
    keyed = sorted(range(len(cards)), key=lambda i: rng.random() ** (1 / weight(cards[i])))
    return keyed[-count:]


async def _staff(
    session: AsyncSession,
    account: data.Account,
    *,
    county_code: str | None = None,
    cooperative_id: uuid.UUID | None = None,
    site_id: uuid.UUID | None = None,
) -> User:
    return await create_staff(
        session,
        NewStaff(
            email=account.email,
            password=account.password,
            role=account.role,
            display_name=account.display_name,
            county_code=county_code,
            cooperative_id=cooperative_id,
            site_id=site_id,
        ),
    )


def _county_scope(code: str) -> str:
    return f"{data.COUNTY[1]} ({code})" if code == data.COUNTY[0] else code


def _account(account: data.Account, scope: str) -> DemoAccount:
    return DemoAccount(account.role.value, account.email, account.password, scope)


async def _existing_accounts(session: AsyncSession) -> tuple[DemoAccount, ...]:
    """The demo accounts still present, for a reminder when nothing new is loaded."""
    fixed = {a.email: a for a in (data.ADMIN, data.OFFICER, data.OPERATOR, data.DEMO_BUYER)}
    managers = {data.manager_email(i) for i in range(1, len(data.ORGANISATIONS) + 1)}
    rows = await session.execute(
        select(User, Cooperative.name, ServiceSite.name)
        .outerjoin(Cooperative, Cooperative.id == User.cooperative_id)
        .outerjoin(ServiceSite, ServiceSite.id == User.site_id)
        .where(User.email.in_([*fixed, *managers]))
        .order_by(User.email)
    )
    found = []
    for user, cooperative_name, site_name in rows:
        scope = {
            Role.admin: "everywhere",
            Role.officer: _county_scope(user.county_code or ""),
            Role.manager: cooperative_name or "",
            Role.site_operator: site_name or "",
            Role.buyer: BUYER_SCOPE,
        }.get(user.role, "")
        password = fixed[user.email].password if user.email in fixed else data.MANAGER_PASSWORD
        found.append(DemoAccount(user.role.value, user.email, password, scope))
    rank = [
        Role.admin.value,
        Role.officer.value,
        Role.site_operator.value,
        Role.manager.value,
        Role.buyer.value,
    ]
    return tuple(sorted(found, key=lambda a: rank.index(a.role)))
