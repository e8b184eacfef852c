"""The demo dataset: the county it promises, built through the services, and built once."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.assessment.households import household_rows
from services.assessment.models import Threshold
from services.assessment.scope import scope_of
from services.assessment.thresholds import Figures, put_thresholds, thresholds_for
from services.catalog.models import Product, ProductStatus, ShareEntry, ShareSet
from services.cooperatives.models import Cooperative, Membership
from services.demo.load import load_demo
from services.demo.outcomes import write_thresholds
from services.demo.trade import Calendar
from services.households.models import (
    Household,
    Member,
    OtherIncome,
    PairedCadre,
    Relation,
    StatusChange,
)
from services.ledger.audit import LedgerAudit
from services.ledger.models import AttributionFlag, EntryKind, FlagStatus, LedgerEntry
from services.ledger.service import CHINA, assessment_year
from services.orders.models import Fulfilment, Order
from services.payments.models import Refund
from services.regions.models import Region
from services.users.models import Role, User
from services.users.service import LoginPolicy, authenticate
from tests.factories import PII_KEY

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
COUNTY = "990102000000"
HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
async def demo(engine):
    """The demo loaded once for the whole module (it takes seconds), then rolled back."""
    async with engine.connect() as connection:
        outer = await connection.begin()
        async with AsyncSession(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        ) as session:
            summary = await load_demo(session, pii_key=PII_KEY, today=NOW.date(), now=NOW)
            yield session, summary
        await outer.rollback()


async def count(session, model, *where):
    return (await session.execute(select(func.count()).select_from(model).where(*where))).scalar()


async def test_demo_has_producer_organisations_of_every_kind(demo):
    session, summary = demo
    kinds = (
        await session.scalars(select(Cooperative.kind).where(Cooperative.county_code == COUNTY))
    ).all()
    assert len(kinds) >= 6
    assert {k.value for k in kinds} == {"cooperative", "household_shop", "enterprise"}
    assert sum(summary.organisations.values()) == len(kinds)


async def test_demo_registers_200_households_with_believable_file_cards(demo):
    session, summary = demo
    cards = (await session.scalars(select(Household).where(Household.county_code == COUNTY))).all()
    assert len(cards) == summary.households == 200
    poor = [h for h in cards if h.poor]
    assert 0 < len(cards) - len(poor) < len(poor)  # some members of cooperatives are not poor
    assert all(2014 <= h.registration_year <= 2019 for h in cards)
    assert all(len(h.other_causes) <= 2 and h.main_cause not in h.other_causes for h in cards)
    assert {h.household_type.value for h in poor} >= {"ordinary", "minimum_living"}
    assert any(not h.safe_housing for h in cards)
    assert sum(h.food_clothing for h in cards) > 180

    heads = await session.execute(
        select(Member.household_id, func.count())
        .where(Member.relation == Relation.head)
        .group_by(Member.household_id)
    )
    head_count = {row[0]: row[1] for row in heads}
    assert all(head_count.get(h.id) == 1 for h in cards)
    members = (
        await session.scalars(select(Member).where(Member.household_id.in_([h.id for h in cards])))
    ).all()
    assert len(members) == summary.persons
    assert all(m.id_number_hash and HAN.match(m.name) for m in members)
    assert {m.sex.value for m in members} == {"male", "female"}
    assert len({m.relation for m in members}) >= 5

    paired = set((await session.scalars(select(PairedCadre.household_id))).all())
    assert paired >= {h.id for h in poor}
    assert await count(session, OtherIncome, OtherIncome.county_code == COUNTY) > 0


async def test_demo_lists_its_products_with_chinese_titles(demo):
    session, summary = demo
    products = (await session.scalars(select(Product).where(Product.county_code == COUNTY))).all()
    # 100 of the eight organisations, the Taobao village's shops' and the orchard's bulk boxes.
    assert len(products) == summary.products > 100
    assert all(HAN.search(p.title) and HAN.search(p.description) for p in products)
    assert any(re.search(r"[A-Za-z]{4}", p.description) for p in products)
    assert all(re.fullmatch(r"[a-z][a-z0-9_-]+", p.category) for p in products)
    assert all(p.price_fen > 0 for p in products)
    assert any(p.stock == 0 for p in products)
    statuses = [p.status for p in products]
    assert statuses.count(ProductStatus.active) > 80
    assert ProductStatus.draft in statuses


async def test_about_a_third_of_the_products_are_certified_some_expired(demo):
    session, _ = demo
    products = (await session.scalars(select(Product).where(Product.county_code == COUNTY))).all()
    certified = [p for p in products if p.certificate_number]
    assert 25 <= len(certified) <= 40
    assert all(p.certificate_issuer and p.certificate_valid_until for p in certified)
    expired = [p for p in certified if p.certificate_valid_until < NOW.date()]
    assert 1 <= len(expired) <= 2


async def test_supply_shares_stay_within_10000_and_go_only_to_members(demo):
    session, summary = demo
    rows = await session.execute(
        select(Product.id, Product.cooperative_id, ShareEntry.household_id, ShareEntry.basis_points)
        .join(ShareSet, ShareSet.product_id == Product.id)
        .join(ShareEntry, ShareEntry.set_id == ShareSet.id)
        .where(Product.county_code == COUNTY)
    )
    totals: dict[object, int] = defaultdict(int)
    suppliers = set()
    for product_id, cooperative_id, household_id, basis_points in rows:
        totals[product_id] += basis_points
        suppliers.add((cooperative_id, household_id))
    memberships = await session.execute(select(Membership.cooperative_id, Membership.household_id))
    members = {(row[0], row[1]) for row in memberships}
    assert len(totals) == summary.products_with_shares >= 60
    assert all(0 < total <= 10_000 for total in totals.values())
    assert suppliers <= members


async def test_demo_accounts_log_in_with_the_printed_passwords(demo):
    session, summary = demo
    roles = {account.role for account in summary.accounts}
    assert roles == {"admin", "officer", "manager", "site_operator", "buyer"}
    officer = next(a for a in summary.accounts if a.role == "officer")
    policy = LoginPolicy(max_failures=10, window=timedelta(minutes=15))
    user = await authenticate(session, officer.email, officer.password, policy=policy, now=NOW)
    assert user.role is Role.officer and user.county_code == COUNTY
    managed = (
        await session.scalars(select(User.cooperative_id).where(User.role == Role.manager))
    ).all()
    organisations = (await session.scalars(select(Cooperative.id))).all()
    assert set(managed) >= set(organisations)


async def test_loading_the_demo_again_changes_nothing(demo):
    session, _ = demo
    models = (
        Household,
        Product,
        Cooperative,
        User,
        Order,
        LedgerEntry,
        Refund,
        AttributionFlag,
        Threshold,
        StatusChange,
        OtherIncome,
    )
    before = [await count(session, model) for model in models]
    again = await load_demo(session, pii_key=PII_KEY, today=NOW.date(), now=NOW)
    assert not again.created and again.trade is None
    roles = {a.role for a in again.accounts}
    assert roles == {"admin", "officer", "manager", "site_operator", "buyer"}
    after = [await count(session, model) for model in models]
    assert after == before


# --- two years of trade -------------------------------------------------------------------

THIS_YEAR = assessment_year(NOW)
LAST_YEAR = THIS_YEAR - 1
TAOBAO_VILLAGE = "990102200003"  # 白水村


async def rows_of(session, year):
    """Every household-year row of the demo county, as an officer's list pages them."""
    officer = (
        await session.scalars(select(User).where(User.email == "demo-officer@example.com"))
    ).one()
    scope = await scope_of(session, officer, COUNTY)
    rows, cursor = [], None
    while True:
        page = await household_rows(session, scope, year, limit=100, cursor=cursor)
        rows += page.items
        cursor = page.next_cursor
        if cursor is None:
            return rows


async def test_demo_sets_marked_demo_thresholds_for_this_year_and_last(demo):
    session, summary = demo
    assert summary.trade is not None
    assert summary.trade.years == (LAST_YEAR, THIS_YEAR)
    this, last = await thresholds_for(session, THIS_YEAR), await thresholds_for(session, LAST_YEAR)
    assert (this.poverty_line_yuan, this.monitoring_line_yuan) == (4_500, 9_000)
    assert (last.poverty_line_yuan, last.monitoring_line_yuan) == (4_400, 8_800)
    assert all(
        "demo" in (t.source or "") and "not official" in (t.source or "") for t in (this, last)
    )


async def test_demo_thresholds_never_replace_an_admins_figures(session, users):
    admin = await users.make(Role.admin)
    # Years far from the demo's own, so that this test's writes meet none of its rows.
    calendar = Calendar(datetime(2071, 6, 1, tzinfo=UTC))
    await put_thresholds(session, admin, 2070, Figures(3_000, 5_000, source="province decree"))
    written, lines = await write_thresholds(session, admin, calendar)
    assert written == [2071]
    assert lines[2070].poverty_line_yuan == 3_000 and lines[2070].source == "province decree"
    assert lines[2071].poverty_line_yuan == 4_500


async def test_orders_span_both_years_paid_by_card_and_in_cash(demo):
    session, summary = demo
    delivered = (
        await session.execute(
            select(Fulfilment.delivered_at, Order.payment_method)
            .join(Order, Order.id == Fulfilment.order_id)
            .where(Fulfilment.county_code == COUNTY, Fulfilment.status == "delivered")
        )
    ).all()
    assert len(delivered) >= 600
    months = {(assessment_year(at), at.astimezone(CHINA).month) for at, _ in delivered}
    assert {(LAST_YEAR, month) for month in range(1, 13)} <= months
    assert {(THIS_YEAR, month) for month in range(1, NOW.month)} <= months
    assert all(at <= NOW for at, _ in delivered)
    assert {method.value for _, method in delivered} == {"stripe", "cod"}
    assert summary.trade.under_way > 0 and summary.trade.cancelled > 0


async def test_canteens_order_in_bulk(demo):
    session, _ = demo
    by_buyer = (
        await session.execute(
            select(User.email, func.max(Order.total_fen))
            .join(Order, Order.buyer_id == User.id)
            .group_by(User.email)
        )
    ).all()
    canteens = [total for email, total in by_buyer if email.startswith("demo-canteen-")]
    people = [total for email, total in by_buyer if email.startswith("demo-buyer")]
    assert len(canteens) == 8 and people
    assert min(canteens) > 10 * max(people)


async def test_every_delivered_paid_fulfilment_is_in_the_ledger_and_the_audit_is_clean(demo):
    session, summary = demo
    unrecognised = await count(
        session,
        Fulfilment,
        Fulfilment.county_code == COUNTY,
        Fulfilment.status == "delivered",
        Fulfilment.recognised_at.is_(None),
    )
    assert unrecognised == 0
    run = LedgerAudit(session, now=NOW)
    differences = [d async for d in run.differences()]
    assert differences == [] and run.clean
    assert run.lines_checked == summary.trade.recognised_lines > 0
    # Refunds after recognition took their shares back with adjustment entries.
    adjusted = await count(session, LedgerEntry, LedgerEntry.kind == EntryKind.adjustment)
    assert summary.trade.refunds > 0 and adjusted > 0


async def test_a_self_dealing_purchase_waits_in_the_officers_queue(demo):
    session, _ = demo
    flags = (
        await session.scalars(select(AttributionFlag).where(AttributionFlag.county_code == COUNTY))
    ).all()
    open_rules = {f.rule.value for f in flags if f.status is FlagStatus.open}
    assert "supplier_household" in open_rules
    ruled = [f for f in flags if f.status is FlagStatus.counted]
    assert ruled and all(f.ruling_reason for f in ruled)


async def test_this_year_some_poor_households_are_exit_eligible_and_some_are_not(demo):
    session, _ = demo
    rows = [r for r in await rows_of(session, THIS_YEAR) if r.poor and r.status == "registered"]
    eligible = [r for r in rows if r.exit_eligible]
    assert len(eligible) >= 5
    assert all(r.per_capita_fen > r.poverty_line_fen and r.failing == [] for r in eligible)
    # For some of them it is the ledger's sales income that lifts them over the line.
    assert any(r.other_income_fen // r.size <= r.poverty_line_fen for r in eligible)
    failing = {reason for r in rows for reason in r.failing}
    assert "income" in failing
    assert failing & {"safe_housing", "safe_drinking_water", "basic_medical"}
    # A household above the line but without a guarantee is not eligible.
    assert any(
        r.per_capita_fen > r.poverty_line_fen and r.failing and "income" not in r.failing
        for r in rows
    )


async def test_households_that_exited_last_year_were_eligible_then(demo):
    session, summary = demo
    last = {r.household_id: r for r in await rows_of(session, LAST_YEAR)}
    exited = [r for r in last.values() if r.status in ("exited", "monitored")]
    assert len(exited) == summary.trade.exited > 0
    assert all(r.exit_eligible for r in exited)
    changes = (
        await session.execute(
            select(StatusChange.from_status, StatusChange.to_status, StatusChange.reason)
            .where(StatusChange.household_id == exited[0].household_id)
            .order_by(StatusChange.id)
        )
    ).all()
    moves = [(c.from_status, c.to_status) for c in changes]
    assert ("registered", "exit_proposed") in moves and ("exit_proposed", "exited") in moves
    assert all(c.reason for c in changes)


async def test_some_exited_households_are_flagged_for_monitoring_this_year(demo):
    session, summary = demo
    rows = await rows_of(session, THIS_YEAR)
    exited = [r for r in rows if r.status in ("exited", "monitored")]
    flagged = [r for r in exited if r.monitoring]
    assert 0 < len(flagged) < len(exited)
    reasons = {reason for r in flagged for reason in r.monitoring_reasons}
    assert reasons == {"under_monitoring_line", "income_drop"}
    # The officer moved a few already; others wait, flagged but still `exited`.
    monitored = [r for r in rows if r.status == "monitored"]
    assert len(monitored) == summary.trade.monitored > 0
    assert all(r.monitoring for r in monitored)
    assert any(r.status == "exited" for r in flagged)


async def village_sales(session, year):
    total = await session.scalar(
        select(func.sum(LedgerEntry.amount_fen))
        .join(Cooperative, Cooperative.id == LedgerEntry.cooperative_id)
        .where(Cooperative.village_code == TAOBAO_VILLAGE, LedgerEntry.year == year)
    )
    return int(total or 0)


async def test_one_village_lands_just_over_the_taobao_sales_figure_this_year(demo):
    session, summary = demo
    assert summary.trade.taobao_village == "白水村"
    figure = (await thresholds_for(session, THIS_YEAR)).taobao_sales_yuan * 100
    assert figure <= await village_sales(session, THIS_YEAR) < figure * 1.03
    last_figure = (await thresholds_for(session, LAST_YEAR)).taobao_sales_yuan * 100
    assert last_figure * 0.9 < await village_sales(session, LAST_YEAR) < last_figure


async def test_the_taobao_village_has_active_stores_in_just_over_a_tenth_of_its_households(demo):
    session, _ = demo
    region = await session.get(Region, TAOBAO_VILLAGE)
    active = await session.scalar(
        select(func.count(func.distinct(Fulfilment.cooperative_id)))
        .join(Order, Order.id == Fulfilment.order_id)
        .join(Cooperative, Cooperative.id == Fulfilment.cooperative_id)
        .where(
            Cooperative.village_code == TAOBAO_VILLAGE,
            Order.paid_at >= NOW - timedelta(days=30),
            Order.paid_at < NOW,
            Fulfilment.status != "cancelled",
        )
    )
    share_bp = (await thresholds_for(session, THIS_YEAR)).taobao_store_share_bp
    assert active * 10_000 >= share_bp * region.household_count
    assert (active - 1) * 10_000 < share_bp * region.household_count
