"""The demo dataset: the county it promises, built through the services, and built once."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.catalog.models import Product, ProductStatus, ShareEntry, ShareSet
from services.cooperatives.models import Cooperative, Membership
from services.demo.load import load_demo
from services.households.models import Household, Member, OtherIncome, PairedCadre, Relation
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


async def test_demo_lists_100_products_with_chinese_titles(demo):
    session, _ = demo
    products = (await session.scalars(select(Product).where(Product.county_code == COUNTY))).all()
    assert len(products) == 100
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
    assert roles == {"admin", "officer", "manager", "site_operator"}
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
    before = [await count(session, model) for model in (Household, Product, Cooperative, User)]
    again = await load_demo(session, pii_key=PII_KEY, today=NOW.date(), now=NOW)
    assert not again.created
    assert {a.role for a in again.accounts} == {"admin", "officer", "manager", "site_operator"}
    after = [await count(session, model) for model in (Household, Product, Cooperative, User)]
    assert after == before
