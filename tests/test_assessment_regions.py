"""Village and county indicators: incidence at the end of the year, sales, stores, Taobao test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from services.assessment.regions import (
    COUNTY_COLUMNS,
    VILLAGE_COLUMNS,
    county_table_sql,
    village_table_sql,
)
from services.assessment.scope import scope_of
from services.assessment.thresholds import thresholds_for
from services.households.models import Household, HouseholdStatus, StatusChange
from services.ledger.service import CHINA
from services.orders.models import Order
from services.regions import service as regions
from services.users.models import Role
from tests.assessment_helpers import THIS_YEAR, set_thresholds
from tests.ledger_helpers import delivered_cod_order, recognise, supplied_product

# Uncertified products pay a 5 % platform fee: a 10,000 fen sale is 9,500 fen net.
NET = 9_500


async def indicators(client, users, code: str, *, year: int = THIS_YEAR, actor=None):
    actor = actor or await users.make(Role.officer)
    return await client.get(
        f"/v1/assessment/regions/{code}", params={"year": year}, headers=users.auth(actor)
    )


async def figures_of(client, users, code: str, **kwargs: Any) -> dict[str, Any]:
    response = await indicators(client, users, code, **kwargs)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def sale(client, users, world, session, cooperative, *, shares=(), quantity: int = 1):
    """A delivered, paid and recognised order of 10,000 fen a unit from the cooperative."""
    product = await supplied_product(world, cooperative, list(shares), price_fen=10_000)
    order = await delivered_cod_order(client, users, [(product, quantity)])
    await recognise(session, order)
    return order


async def stores_with_sales(client, users, world, session, village: str, count: int) -> None:
    for _ in range(count):
        await sale(client, users, world, session, await world.cooperative(village))


async def moved(session, household: Household, to: HouseholdStatus, at: datetime) -> None:
    """A status change at a chosen moment, as the exit workflow would record it."""
    session.add(
        StatusChange(
            household_id=household.id,
            from_status=household.status.value,
            to_status=to.value,
            reason="public notice ended",
            changed_at=at,
        )
    )
    household.status = to
    await session.flush()


async def registered_on(session, household: Household, at: datetime) -> None:
    """Date the card's first history row: registered long before the events of a test."""
    await session.execute(
        update(StatusChange)
        .where(StatusChange.household_id == household.id, StatusChange.from_status.is_(None))
        .values(changed_at=at)
    )


async def new_village(session, code: str, **extra: Any) -> str:
    await regions.create_region(session, regions.NewRegion(code=code, name=f"村{code}", **extra))
    return code


async def new_county(session, county: str, **extra: Any) -> str:
    """A county of the fictional city with one township and one village (county + 100001)."""
    await regions.create_region(session, regions.NewRegion(code=county, name="县", **extra))
    await regions.create_region(session, regions.NewRegion(code=county[:6] + "100000", name="镇"))
    return await new_village(session, county[:6] + "100001")


# --- villages --------------------------------------------------------------------------------


async def test_a_village_reports_households_poverty_sales_and_stores(
    client, users, world, session
) -> None:
    await set_thresholds(
        client, users, taobao_sales_yuan=285, taobao_active_stores=2, taobao_store_share_bp=1_000
    )
    village = world.county.village  # 300 households recorded, rural population 1,000
    poor = await world.household(size=3)
    await world.household(size=2)
    not_poor = await world.household(size=4)
    not_poor.poor = False
    exited = await world.household(size=5)
    await moved(session, exited, HouseholdStatus.exit_proposed, datetime.now(UTC))
    await moved(session, exited, HouseholdStatus.exited, datetime.now(UTC))
    await world.household(world.county.village2)  # another village
    supplier, seller = await world.cooperative(), await world.cooperative()
    await world.cooperative()  # a store without orders
    await sale(client, users, world, session, supplier, shares=[(poor, 6_000)], quantity=2)
    await sale(client, users, world, session, seller)
    await sale(client, users, world, session, await world.cooperative(world.county.village2))

    body = await figures_of(client, users, village)
    assert (body["level"], body["code"], body["county_code"]) == (
        "village",
        village,
        world.county.county,
    )
    assert (body["households"], body["households_source"], body["file_cards"]) == (300, "region", 4)
    assert (body["poor_households"], body["poor_persons"]) == (2, 5)
    assert body["rural_population"] == 1_000
    # The fictional province is western: exit below 3 %.
    assert body["incidence"] == {
        "bp": 50,
        "percent": 0.5,
        "threshold_bp": 300,
        "western": True,
        "passes_exit": True,
    }
    # Households' and cooperatives' parts alike, after fees: 2 × 9,500 + 9,500.
    assert body["sales_fen"] == 3 * NET
    assert (body["stores"], body["active_stores"]) == (3, 2)
    assert body["taobao"] == {
        "passes": True,
        "failing": [],
        "urban": False,
        "sales_fen": {"figure": 28_500, "threshold": 28_500, "passes": True},
        "active_stores": {"figure": 2, "threshold": 2, "passes": True},
        "store_share_bp": {"figure": 66, "threshold": 1_000, "passes": False},
    }


async def test_a_village_without_a_recorded_household_count_counts_its_file_cards(
    client, users, world, session
) -> None:
    await set_thresholds(client, users)
    village = await new_village(session, "990102100003")
    for _ in range(2):
        await world.household(village)
    body = await figures_of(client, users, village)
    assert (body["households"], body["households_source"]) == (2, "file_cards")
    assert body["rural_population"] is None
    assert body["incidence"]["bp"] is None and body["incidence"]["passes_exit"] is None


async def test_a_village_passes_by_store_share_when_too_few_stores_for_the_count(
    client, users, world, session
) -> None:
    await set_thresholds(
        client, users, taobao_sales_yuan=1, taobao_active_stores=3, taobao_store_share_bp=100
    )
    village = world.county.village2  # 200 households: 1 % of them is 2 stores
    await stores_with_sales(client, users, world, session, village, 2)
    taobao = (await figures_of(client, users, village))["taobao"]
    assert taobao["active_stores"] == {"figure": 2, "threshold": 3, "passes": False}
    assert taobao["store_share_bp"] == {"figure": 100, "threshold": 100, "passes": True}
    assert taobao["passes"] is True and taobao["failing"] == []


async def test_a_village_just_short_of_the_sales_figure_is_not_a_taobao_village(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, taobao_sales_yuan=191, taobao_active_stores=1)
    village = world.county.village
    await stores_with_sales(client, users, world, session, village, 2)
    taobao = (await figures_of(client, users, village))["taobao"]
    assert taobao["sales_fen"] == {"figure": 19_000, "threshold": 19_100, "passes": False}
    assert taobao["active_stores"]["passes"] is True
    assert taobao["passes"] is False and taobao["failing"] == ["sales"]


async def test_an_urban_residents_committee_is_never_a_taobao_village(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, taobao_sales_yuan=1, taobao_active_stores=1)
    committee = await new_village(session, "990102100004", urban=True, household_count=10)
    await stores_with_sales(client, users, world, session, committee, 2)
    taobao = (await figures_of(client, users, committee))["taobao"]
    assert taobao["sales_fen"]["passes"] and taobao["active_stores"]["passes"]
    assert taobao["store_share_bp"]["passes"]  # 2 of 10 households
    assert taobao["urban"] is True
    assert taobao["passes"] is False and taobao["failing"] == ["urban"]


async def test_a_village_without_sales_or_active_stores_names_both_reasons(
    client, users, world
) -> None:
    await set_thresholds(client, users)
    await world.cooperative()
    body = await figures_of(client, users, world.county.village)
    assert (body["sales_fen"], body["stores"], body["active_stores"]) == (0, 1, 0)
    assert body["taobao"]["failing"] == ["sales", "active_stores"]


async def test_incidence_counts_the_status_households_had_when_the_year_ended(
    client, users, world, session
) -> None:
    last_year = THIS_YEAR - 1
    await set_thresholds(client, users, last_year)
    await set_thresholds(client, users)
    end = datetime(THIS_YEAR, 1, 1, tzinfo=CHINA)
    late = await world.household(size=2)
    await registered_on(session, late, datetime(2016, 3, 1, tzinfo=CHINA))
    await moved(session, late, HouseholdStatus.exit_proposed, end - timedelta(days=10))
    await moved(session, late, HouseholdStatus.exited, end + timedelta(seconds=1))
    early = await world.household(size=3)
    await registered_on(session, early, datetime(2016, 3, 1, tzinfo=CHINA))
    await moved(session, early, HouseholdStatus.exit_proposed, end - timedelta(days=10))
    await moved(session, early, HouseholdStatus.exited, end - timedelta(minutes=1))

    then = await figures_of(client, users, world.county.village, year=last_year)
    # Exited a second after the year ended: still poor for that year.
    assert (then["poor_households"], then["poor_persons"]) == (1, 2)
    assert then["incidence"]["bp"] == 20 and then["incidence"]["percent"] == 0.2
    assert then["as_of"] == end.astimezone(UTC).isoformat().replace("+00:00", "Z")
    now = await figures_of(client, users, world.county.village)
    assert (now["poor_households"], now["poor_persons"]) == (0, 0)


async def test_a_card_entered_after_the_year_had_the_status_its_history_starts_from(
    client, users, world, session
) -> None:
    # Cards registered in 2016 but entered now: no history reaches back to last year.
    await set_thresholds(client, users, THIS_YEAR - 1)
    await world.household(size=2)
    proposed = await world.household(size=3)
    await moved(session, proposed, HouseholdStatus.exit_proposed, datetime.now(UTC))
    await moved(session, proposed, HouseholdStatus.exited, datetime.now(UTC))
    body = await figures_of(client, users, world.county.village, year=THIS_YEAR - 1)
    assert (body["file_cards"], body["poor_households"], body["poor_persons"]) == (2, 2, 5)


async def test_a_household_registered_after_the_year_is_not_on_its_file(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, 2015)
    await world.household(size=2)  # registered in 2016
    body = await figures_of(client, users, world.county.village, year=2015)
    assert (body["file_cards"], body["poor_households"]) == (0, 0)


async def test_active_stores_had_a_paid_order_in_the_trailing_30_days(
    client, users, world, session
) -> None:
    await set_thresholds(client, users)
    recent, lapsed = await world.cooperative(), await world.cooperative()
    recent_order = await sale(client, users, world, session, recent)
    lapsed_order = await sale(client, users, world, session, lapsed)
    now = datetime.now(UTC)
    for order, days in ((recent_order, 29), (lapsed_order, 31)):
        await session.execute(
            update(Order).where(Order.id == order["id"]).values(paid_at=now - timedelta(days=days))
        )
    body = await figures_of(client, users, world.county.village)
    assert (body["stores"], body["active_stores"]) == (2, 1)
    assert body["sales_fen"] == 2 * NET  # sales of the year count whenever paid


# --- counties --------------------------------------------------------------------------------


async def test_a_western_county_exits_below_3_percent_where_others_need_2(
    client, users, world, session
) -> None:
    await set_thresholds(client, users)  # exit below 200 bp, western below 300 bp
    admin = await users.make(Role.admin)
    verdicts = {}
    for county, western in (("990104000000", False), ("990105000000", True)):
        village = await new_county(session, county, western=western, rural_population=200)
        await world.household(village, size=5)  # 5 of 200: 2.5 %
        body = await figures_of(client, users, county, actor=admin)
        assert body["level"] == "county" and body["rural_population_source"] == "region"
        assert (body["poor_persons"], body["incidence"]["bp"]) == (5, 250)
        verdicts[western] = body["incidence"]
    assert (verdicts[False]["threshold_bp"], verdicts[False]["passes_exit"]) == (200, False)
    assert (verdicts[True]["threshold_bp"], verdicts[True]["passes_exit"]) == (300, True)


async def test_a_county_adds_up_its_villages(client, users, world, session) -> None:
    await set_thresholds(client, users, taobao_sales_yuan=1, taobao_active_stores=1)
    await world.household(size=3)
    await world.household(world.county.village2, size=2)
    await sale(client, users, world, session, await world.cooperative())
    await world.cooperative(world.county.village2)
    body = await figures_of(client, users, world.county.county)
    assert (body["villages"], body["households"], body["households_source"]) == (2, 500, "villages")
    assert (body["file_cards"], body["poor_households"], body["poor_persons"]) == (2, 2, 5)
    assert (body["rural_population"], body["rural_population_source"]) == (1_000, "region")
    assert body["incidence"]["bp"] == 50 and body["incidence"]["passes_exit"] is True
    assert body["taobao_villages"] == {"count": 1, "codes": [world.county.village]}
    assert (body["sales_fen"], body["stores"], body["active_stores"]) == (NET, 2, 1)


async def test_a_county_without_its_own_rural_population_sums_its_villages(
    client, users, world, session
) -> None:
    await set_thresholds(client, users)
    county = "990106000000"
    village = await new_county(session, county)
    await regions.create_region(
        session, regions.NewRegion(code="990106100002", name="村", rural_population=300)
    )
    await world.household(village, size=3)
    body = await figures_of(client, users, county, actor=await users.make(Role.admin))
    assert (body["rural_population"], body["rural_population_source"]) == (300, "villages")
    assert body["villages_without_rural_population"] == 1
    assert body["incidence"]["bp"] == 100


# --- access and input ------------------------------------------------------------------------


async def test_an_officer_of_another_county_is_refused(client, users, world) -> None:
    await set_thresholds(client, users)
    stranger = await users.make(Role.officer, county_code=world.county.other_county)
    for code in (world.county.village, world.county.county):
        response = await indicators(client, users, code, actor=stranger)
        assert response.status_code == 403, response.text
    own = await indicators(client, users, world.county.other_village, actor=stranger)
    assert own.status_code == 200, own.text


async def test_a_township_is_a_clear_problem_naming_the_code(client, users, world) -> None:
    await set_thresholds(client, users)
    response = await indicators(client, users, world.county.township)
    assert response.status_code == 422
    assert response.json()["field"] == "code"
    assert "village or a county" in response.json()["detail"]


async def test_a_year_without_thresholds_cannot_be_assessed(client, users, world) -> None:
    response = await indicators(client, users, world.county.village, year=2005)
    assert response.status_code == 404 and response.json()["field"] == "year"


async def test_a_year_that_has_not_begun_cannot_be_assessed(client, users, world) -> None:
    await set_thresholds(client, users, THIS_YEAR + 1)
    response = await indicators(client, users, world.county.village, year=THIS_YEAR + 1)
    assert response.status_code == 422 and response.json()["field"] == "year"


# --- the tables exports stream ---------------------------------------------------------------


async def test_the_tables_give_one_row_per_village_and_county_of_a_province(
    users, world, session
) -> None:
    admin = await users.make(Role.admin)
    scope = await scope_of(session, admin, world.county.province)
    threshold = await thresholds_for(session, 2020)
    now = datetime.now(UTC)
    villages = (await session.execute(village_table_sql(scope, 2020, threshold, now))).all()
    assert [tuple(r._mapping) for r in villages[:1]] == [VILLAGE_COLUMNS]
    assert [r.village_code for r in villages] == [
        world.county.village,
        world.county.village2,
        world.county.other_village,
    ]
    counties = (await session.execute(county_table_sql(scope, 2020, threshold, now))).all()
    assert [tuple(r._mapping) for r in counties[:1]] == [COUNTY_COLUMNS]
    assert [(r.county_code, r.villages) for r in counties] == [
        (world.county.county, 2),
        (world.county.other_county, 1),
    ]
