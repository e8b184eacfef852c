"""Orders of the demo county, planned from a seeded generator and carried through the services.

Every order goes the way a real one goes: `prepare_order` reserves stock and snapshots
the supply shares, a card payment arrives as a Stripe `payment_intent.succeeded`
event through `payments.receive_event` (the demo runs without Stripe keys, so the
event is built here, with `evt_demo_`/`pi_demo_` ids), parcels are registered with
`tracking.create_shipment`, and managers and the site operator record deliveries
and cash collected with `tracking.record_manual_event`. Each call gets the moment
it happens at as its clock, so orders, payments and deliveries carry dates spread
over last year and this one. Recognition into the ledger follows later, in bulk
(`services.demo.load`), the way `marketplace ledger-recognise` works off a backlog.

The current year's trade is spread over the part of it that has passed, whatever
the date: a newcomer on the 5th of January still sees a year's worth of it.
"""

from __future__ import annotations

import enum
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.catalog import service as catalog
from services.catalog.models import Product, ProductStatus, ShareEntry, ShareSet
from services.cooperatives.models import CooperativeKind
from services.demo import data
from services.demo.people import person_name, phone
from services.households.models import Sex
from services.households.service import NewHousehold
from services.jobs.service import enqueue

# Imported for what they register: the flag rules and the payouts follow every
# recognition, in every process that recognises income (as services.ledger.jobs says).
from services.ledger import flag_rules, payouts  # noqa: F401
from services.ledger.service import CHINA, assessment_year
from services.orders import flows
from services.orders.checkout import (
    Cart,
    CartLine,
    Delivery,
    FeePolicy,
    prepare_order,
    write_order,
)
from services.orders.models import DeliveryType, PaymentMethod
from services.orders.service import OrderView
from services.payments import service as payments
from services.payments.stripe import Event
from services.tracking import service as tracking
from services.tracking.models import ManualEvent, Source
from services.users.models import User
from services.users.service import NewAccount, register_buyer

# The settings' defaults (MARKETPLACE_PLATFORM_FEE_BP...): the demo is loaded without them.
FEES = FeePolicy()
RESERVATION = timedelta(minutes=30)
PERSON_BUYERS = 12
# Orders per year. People buy a few boxes; canteens buy for a week of meals.
RETAIL_ORDERS = 120
CANTEEN_ORDERS = 120
CANTEEN_LINE_YUAN = (3_000, 12_000)
# Orders still under way at the moment of loading, cancelled, or refused at the door.
UNDER_WAY = 8
CANCELLED = 3
REFUSED = 1
CARD_SHARE = 0.6
PICKUP_SHARE = 0.05
# The last moments before `now` carry no deliveries: nothing is dated in the future.
LEAD = timedelta(hours=6)
CARRIERS = ("sf", "ems", "chinapost")


@dataclass(frozen=True, slots=True)
class Seller:
    """A producer organisation as trade sees it: where it is and who runs it."""

    id: uuid.UUID
    kind: CooperativeKind
    village_code: str
    manager: User


@dataclass(frozen=True, slots=True)
class Calendar:
    """The two demo years: the current assessment year (China time) and the one before."""

    now: datetime

    @property
    def this_year(self) -> int:
        return assessment_year(self.now)

    @property
    def years(self) -> tuple[int, int]:
        return (self.this_year - 1, self.this_year)

    def start(self, year: int) -> datetime:
        return datetime(year, 1, 1, tzinfo=CHINA)

    def at(self, year: int, u: float) -> datetime:
        """The moment `u` (0..1) of the way through the year's trading time."""
        start = self.start(year)
        if year < self.this_year:
            return start + (self.start(year + 1) - start) * u
        elapsed = self.now - start
        return start + (elapsed - min(LEAD, elapsed / 4)) * u


class Stage(enum.Enum):
    delivered = "delivered"
    shipped = "shipped"  # under way at the moment of loading
    ready = "ready"  # paid (or cash on delivery), waiting to be shipped
    cancelled = "cancelled"  # by the buyer, before shipping
    refused = "refused"  # cash on delivery, refused at the door


@dataclass(slots=True)
class Plan:
    """One order to carry: who buys what, how it is paid and delivered, and when."""

    buyer: User
    lines: list[tuple[uuid.UUID, int]]
    placed_at: datetime
    delivered_at: datetime
    card: bool
    address: dict[str, Any] | None  # None: picked up at the village service site
    stage: Stage = Stage.delivered
    view: OrderView | None = None


@dataclass(slots=True)
class Item:
    id: uuid.UUID
    seller: Seller
    title: str
    category: str
    price_fen: int
    suppliers: list[uuid.UUID]  # households with a supply share
    popularity: dict[int, float] = field(default_factory=dict)


class Trader:
    """Plans orders over the demo catalogue and carries them through the services."""

    def __init__(
        self,
        session: AsyncSession,
        rng: random.Random,
        calendar: Calendar,
        *,
        operator: User,
        site_id: uuid.UUID,
    ) -> None:
        self.session = session
        self.rng = rng
        self.calendar = calendar
        self.operator = operator
        self.site_id = site_id
        self.sellers: dict[uuid.UUID, Seller] = {}
        self.items: list[Item] = []  # what orders are planned over
        self.catalogue: dict[uuid.UUID, Item] = {}  # every product opened, left out or not
        self.people: list[User] = []
        self.canteens: list[User] = []
        self.addresses: dict[uuid.UUID, dict[str, Any]] = {}
        self._numbers: set[tuple[str, str]] = set()
        self.carried: list[Plan] = []

    # --- who sells what, and who buys ------------------------------------------------------

    async def open(self, sellers: list[Seller], *, leave_out: set[uuid.UUID]) -> None:
        """The active, stocked products of these sellers (not `leave_out`), in title order.

        Sold-out products stay sold out; the others are restocked by their managers
        when an order needs more than is left.
        """
        self.sellers |= {s.id: s for s in sellers}
        rows = (
            await self.session.execute(
                select(
                    Product.id,
                    Product.cooperative_id,
                    Product.title,
                    Product.category,
                    Product.price_fen,
                )
                .where(
                    Product.cooperative_id.in_([s.id for s in sellers]),
                    Product.status == ProductStatus.active,
                    Product.stock > 0,
                )
                .order_by(Product.title)
            )
        ).all()
        shared: dict[uuid.UUID, list[uuid.UUID]] = {}
        for product_id, household_id in await self.session.execute(
            select(ShareSet.product_id, ShareEntry.household_id)
            .join(ShareEntry, ShareEntry.set_id == ShareSet.id)
            .where(ShareSet.product_id.in_([r.id for r in rows]))
        ):
            shared.setdefault(product_id, []).append(household_id)
        last, this = self.calendar.years
        for row in rows:
            item = Item(
                row.id,
                self.sellers[row.cooperative_id],
                row.title,
                row.category,
                row.price_fen,
                sorted(shared.get(row.id, []), key=str),
            )
            self.catalogue[row.id] = item
            if row.id in leave_out:
                continue
            base = self.rng.lognormvariate(0, 0.7)
            # Demand moves between the years: a household's income with it.
            item.popularity = {last: base, this: base * self.rng.lognormvariate(0, 0.5)}
            self.items.append(item)

    async def register_buyers(self) -> None:
        """People in cities (the first is the printed demo buyer) and institutional canteens."""
        for index in range(1, PERSON_BUYERS + 1):
            sex = self.rng.choice(list(Sex))
            name = person_name(
                self.rng, self.rng.choice(data.SURNAMES), sex, self.rng.randint(1965, 2000)
            )
            buyer = await register_buyer(
                self.session,
                NewAccount(
                    email=data.buyer_email(index),
                    password=data.BUYER_PASSWORD,
                    display_name=data.DEMO_BUYER.display_name if index == 1 else name,
                    phone=phone(self.rng),
                ),
            )
            province, city, district = self.rng.choice(data.BUYER_PLACES)
            self.addresses[buyer.id] = {
                "recipient": name,
                "phone": buyer.phone,
                "province": province,
                "city": city,
                "county": district,
                "street": f"{self.rng.choice(data.STREETS)}{self.rng.randint(1, 400)}号"
                f"{self.rng.randint(1, 30)}栋{self.rng.randint(1, 28)}0{self.rng.randint(1, 4)}室",
            }
            self.people.append(buyer)
        for index, (name, district, street) in enumerate(data.INSTITUTIONS, start=1):
            contact = person_name(
                self.rng, self.rng.choice(data.SURNAMES), Sex.male, self.rng.randint(1970, 1990)
            )
            canteen = await register_buyer(
                self.session,
                NewAccount(
                    email=data.canteen_email(index),
                    password=data.BUYER_PASSWORD,
                    display_name=name,
                    phone=phone(self.rng),
                ),
            )
            self.addresses[canteen.id] = {
                "recipient": f"{name}采购 {contact}",
                "phone": canteen.phone,
                "province": data.PROVINCE[1],
                "city": data.CITY[1],
                "county": district,
                "street": street,
            }
            self.canteens.append(canteen)

    # --- planning ------------------------------------------------------------------------

    def _pick(self, items: list[Item], year: int, k: int) -> list[Item]:
        """Up to k distinct items, the more popular ones more often."""
        pool = list(items)
        chosen: list[Item] = []
        while pool and len(chosen) < k:
            item = self.rng.choices(pool, [i.popularity[year] for i in pool])[0]
            pool.remove(item)
            chosen.append(item)
        return chosen

    def _of_seller(self, items: list[Item], year: int) -> list[Item]:
        """The items of one seller, drawn by its products' popularity."""
        weights: dict[uuid.UUID, float] = {}
        for item in items:
            weights[item.seller.id] = weights.get(item.seller.id, 0) + item.popularity[year]
        sellers = list(weights)
        seller = self.rng.choices(sellers, [weights[s] for s in sellers])[0]
        return [i for i in items if i.seller.id == seller]

    def _timing(self, year: int, u: float, days: tuple[float, float]) -> tuple[datetime, datetime]:
        delivered = self.calendar.at(year, u)
        return delivered - timedelta(days=self.rng.uniform(*days)), delivered

    def retail(self, year: int, *, items: list[Item] | None = None) -> Plan:
        """A person's order: one to three products of a seller, now and then of two."""
        pool = items or self.items
        chosen = self._pick(self._of_seller(pool, year), year, self.rng.choice((1, 1, 2, 3)))
        if items is None and self.rng.random() < 0.12:
            chosen += [
                i for i in self._pick(self._of_seller(pool, year), year, 1) if i not in chosen
            ]
        buyer = self.rng.choice(self.people)
        placed, delivered = self._timing(year, self.rng.random(), (1.5, 5))
        pickup = self.rng.random() < PICKUP_SHARE
        return Plan(
            buyer,
            [(i.id, self.rng.choice((1, 1, 1, 2, 2, 3))) for i in chosen],
            placed,
            delivered,
            card=self.rng.random() < CARD_SHARE,
            address=None if pickup else self.addresses[buyer.id],
        )

    def canteen(self, year: int, *, lines: list[tuple[uuid.UUID, int]] | None = None) -> Plan:
        """A canteen's order: food of one seller, a week's worth of each (or these lines)."""
        if lines is None:
            food = [i for i in self.items if i.category != "handicraft"]
            chosen = self._pick(self._of_seller(food, year), year, self.rng.randint(2, 4))
            lines = [(i.id, self._week_of(i)) for i in chosen]
        buyer = self.rng.choice(self.canteens)
        placed, delivered = self._timing(year, self.rng.random(), (1, 3))
        # Institutions pay by card or transfer mostly, in cash at the gate now and then.
        card = self.rng.random() < 0.75
        return Plan(buyer, lines, placed, delivered, card=card, address=self.addresses[buyer.id])

    def _week_of(self, item: Item) -> int:
        quantity = round(self.rng.uniform(*CANTEEN_LINE_YUAN) * 100 / item.price_fen)
        return min(10_000, max(5, quantity))

    def unfinished(self) -> list[Plan]:
        """Orders that a newcomer finds in the managers' queues, and a few that went wrong."""
        plans = []
        now = self.calendar.now
        for index in range(UNDER_WAY):
            plan = self.retail(self.calendar.this_year)
            plan.placed_at = now - timedelta(days=self.rng.uniform(0.1, 3))
            plan.delivered_at = now
            plan.stage = Stage.shipped if index % 2 else Stage.ready
            plans.append(plan)
        for stage, count in ((Stage.cancelled, CANCELLED), (Stage.refused, REFUSED)):
            for _ in range(count):
                plan = self.retail(self.rng.choice(self.calendar.years))
                plan.card, plan.stage = False, stage
                if plan.address is None:
                    plan.address = self.addresses[plan.buyer.id]
                plans.append(plan)
        return plans

    def insider(self, year: int, item: Item, card: NewHousehold) -> Plan:
        """A purchase sent to a supplying household itself, paid in cash at its door: what
        the self-dealing rule exists for (a relative in town lifting the household's income)."""
        placed, delivered = self._timing(year, self.rng.uniform(0.3, 0.9), (2, 4))
        address = {
            "recipient": card.members[0].name,
            "phone": card.phone,
            "province": data.PROVINCE[1],
            "city": data.CITY[1],
            "county": data.COUNTY[1],
            "street": card.address,
            "region_code": card.village_code,
        }
        buyer = self.rng.choice(self.people)
        return Plan(buyer, [(item.id, 3)], placed, delivered, card=False, address=address)

    async def refund(self, plan: Plan, reason: str) -> None:
        """The selling manager gives back one unit of the order's first line, in cash."""
        assert plan.view is not None
        line = plan.view.lines[0]
        await payments.request_refund(
            self.session,
            self.sellers[line.cooperative_id].manager,
            plan.view.order.id,
            payments.RefundRequest(lines=[payments.LineRefund(line.id, 1)], reason=reason),
            enqueue=enqueue,
        )
        await self._done()

    # --- carrying --------------------------------------------------------------------------

    async def carry(self, plan: Plan) -> OrderView:
        """Check out, pay, ship and deliver (as far as the plan's stage goes)."""
        try:
            return await self._carry(plan)
        finally:
            # Each request of the API starts with an empty session; so does each order here.
            # (Bulk UPDATEs match their rows against every object the session holds.)
            self.session.expunge_all()

    async def _carry(self, plan: Plan) -> OrderView:
        session, rng = self.session, self.rng
        await self._restock(plan.lines)
        if plan.address is None:
            delivery = Delivery(DeliveryType.pickup, site_id=self.site_id)
        else:
            delivery = Delivery(DeliveryType.home, address=plan.address)
        cart = Cart(
            lines=[CartLine(product, quantity) for product, quantity in plan.lines],
            delivery=delivery,
            payment_method=PaymentMethod.stripe if plan.card else PaymentMethod.cod,
        )
        prepared = await prepare_order(
            session, plan.buyer, cart, fees=FEES, now=plan.placed_at, reservation=RESERVATION
        )
        await write_order(session, prepared)
        view = prepared.view
        plan.view = view
        self.carried.append(plan)
        order = view.order
        span = plan.delivered_at - plan.placed_at
        if plan.card:
            paid_at = plan.placed_at + min(timedelta(minutes=rng.uniform(1, 20)), span / 10)
            await payments.receive_event(
                session,
                _card_payment(order.id, order.total_fen, paid_at),
                now=paid_at,
                enqueue=enqueue,
            )
            await self._done()
        if plan.stage is Stage.cancelled:
            await flows.cancel_by_buyer(
                session, plan.buyer, order.id, now=plan.placed_at + span / 5, enqueue=enqueue
            )
            return view
        if plan.stage is Stage.ready:
            return view
        shipped_at = plan.placed_at + span * rng.uniform(0.2, 0.5)
        shipments = []
        for fulfilment in view.fulfilments:
            shown, _ = await tracking.create_shipment(
                session,
                self.sellers[fulfilment.cooperative_id].manager,
                fulfilment.id,
                carrier=(carrier := rng.choice(CARRIERS)),
                tracking_number=self._number(carrier),
                provider=Source.manual,
                poll_from=None,
                now=shipped_at,
            )
            await self._done()
            shipments.append(shown.shipment)
        if plan.stage is Stage.shipped:
            return view
        cash_due = not plan.card
        for shipment in shipments:
            manager = self.sellers[shipment.cooperative_id].manager
            if plan.stage is Stage.refused:
                await self._event(manager, shipment.id, ManualEvent.refused, plan.delivered_at)
                break
            if plan.address is None:
                # The village site receives the parcel; the buyer collects it (and pays) there.
                arrived = plan.delivered_at - (plan.delivered_at - shipped_at) / 3
                await self._event(self.operator, shipment.id, ManualEvent.received_at_site, arrived)
                actor, kind = self.operator, ManualEvent.picked_up
            else:
                actor, kind = manager, ManualEvent.delivered
            if cash_due:
                # The whole order's cash is taken once, with its first parcel.
                kind, cash_due = ManualEvent.cash_collected, False
                await self._event(actor, shipment.id, kind, plan.delivered_at, order.total_fen)
            else:
                await self._event(actor, shipment.id, kind, plan.delivered_at)
        return view

    async def _event(
        self,
        actor: User,
        shipment_id: uuid.UUID,
        kind: ManualEvent,
        at: datetime,
        amount_fen: int | None = None,
    ) -> None:
        note = "买家拒收" if kind is ManualEvent.refused else None
        await tracking.record_manual_event(
            self.session,
            actor,
            shipment_id,
            tracking.ManualReport(kind=kind, occurred_at=at, amount_fen=amount_fen, note=note),
            now=at,
        )
        await self._done()

    async def _done(self) -> None:
        """One request's work ends here: written, as the API's commit would write it, before
        the next call reads (services re-read their rows with populate_existing)."""
        await self.session.flush()

    async def _restock(self, lines: list[tuple[uuid.UUID, int]]) -> None:
        """A manager tops up stock that an order needs (sold-out products were left out)."""
        stock = dict(
            (
                await self.session.execute(
                    select(Product.id, Product.stock).where(
                        Product.id.in_([product for product, _ in lines])
                    )
                )
            ).all()
        )
        for product, quantity in lines:
            if stock[product] < quantity:
                await catalog.update_product(
                    self.session,
                    self.catalogue[product].seller.manager,
                    product,
                    {"stock": quantity + self.rng.randint(50, 400)},
                )

    def _number(self, carrier: str) -> str:
        while True:
            digits = "".join(self.rng.choice("0123456789") for _ in range(13))
            number = f"SF{digits}" if carrier == "sf" else digits
            if (carrier, number) not in self._numbers:
                self._numbers.add((carrier, number))
                return number


def _card_payment(order_id: uuid.UUID, amount_fen: int, at: datetime) -> Event:
    """The Stripe event a card payment of the order would have sent."""
    intent = f"pi_demo_{order_id.hex}"
    obj = {
        "id": intent,
        "object": "payment_intent",
        "amount": amount_fen,
        "amount_received": amount_fen,
        "currency": "cny",
        "status": "succeeded",
        "metadata": {"order_id": str(order_id)},
    }
    event_id = f"evt_demo_{order_id.hex}"
    created = int(at.timestamp())
    return Event(
        id=event_id,
        type="payment_intent.succeeded",
        created=at,
        livemode=False,
        object_id=intent,
        object=obj,
        payload={
            "id": event_id,
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": created,
            "livemode": False,
            "data": {"object": obj},
        },
    )
