"""Alkire–Foster multidimensional poverty of a region: H, A, M0 and each indicator's share."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from sqlalchemy import select, update

from services.households.models import Education, Health, Household, Labour, Member
from services.households.service import GUARANTEES
from services.ledger.models import AttributionFlag
from services.users.models import Role, User
from tests.assessment_helpers import THIS_YEAR, add_income, set_thresholds
from tests.ledger_helpers import delivered_cod_order, recognise, supplied_product
from tests.test_ledger import refund

LINE_FEN = 10_000  # set_thresholds' poverty line: 100 yuan a head


async def mpi(client, users, region: str, *, actor: User | None = None, **params: Any):
    actor = actor or await users.make(Role.officer)
    return await client.get(
        "/v1/assessment/mpi",
        params={"region": region, "year": THIS_YEAR, **params},
        headers=users.auth(actor),
    )


async def figures(client, users, region: str, **params: Any) -> dict[str, Any]:
    response = await mpi(client, users, region, **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def exact(body: dict[str, Any], *names: str) -> dict[str, str]:
    return {name: body[f"{name}_exact"] for name in names}


def by_indicator(body: dict[str, Any], figure: str) -> dict[str, str]:
    return {i["name"]: i[f"{figure}_exact"] for i in body["indicators"]}


async def patch(client, users, household: Household, **fields: Any) -> None:
    officer = await users.make(Role.officer)
    response = await client.patch(
        f"/v1/households/{household.id}", json=fields, headers=users.auth(officer)
    )
    assert response.status_code == 200, response.text


async def members(session, household: Household, *, position: int | None = None, **values) -> None:
    """Change every member of a household, or the one at `position`."""
    stmt = update(Member).where(Member.household_id == household.id)
    if position is not None:
        stmt = stmt.where(Member.position == position)
    await session.execute(stmt.values(**values))


async def well_off(client, users, world, session, size: int) -> Household:
    """A household deprived in nothing: guarantees hold, insured, income above the line."""
    household = await world.household(size=size)
    await patch(client, users, household, **dict.fromkeys(GUARANTEES, True))
    await members(session, household, medical_insurance=True)
    await add_income(client, users, household, 2 * LINE_FEN * size)
    return household


async def test_a_worked_example_reproduces_the_hand_calculation(
    client, users, world, session
) -> None:
    """Weights schooling 1/4, health 1/2, housing 1/8, income 1/8; k = 1/3.

    Four households, 10 persons; deprivations apply to every member:

    | household | persons | deprived in                | score c                  |
    |-----------|---------|----------------------------|--------------------------|
    | a         | 1       | schooling, housing, income | 1/4 + 1/8 + 1/8 = 1/2    |
    | b         | 2       | schooling, income          | 1/4 + 1/8 = 3/8 ≥ 1/3    |
    | c         | 3       | schooling                  | 1/4 < 1/3: not poor      |
    | d         | 4       | health, housing            | 1/2 + 1/8 = 5/8          |

    n = 10, q = 1 + 2 + 4 = 7 (households a, b, d), H = 7/10.
    Σ c_i(k) = 1 × 1/2 + 2 × 3/8 + 4 × 5/8 = 1/2 + 3/4 + 5/2 = 15/4.
    A = (15/4) / 7 = 15/28; M0 = H × A = 7/10 × 15/28 = 3/8 (= (15/4) / 10).

    Uncensored h_j: schooling (a, b, c) 6/10 = 3/5; health (d) 4/10 = 2/5;
    housing (a, d) 5/10 = 1/2; income (a, b) 3/10.
    Censored h_j(k), c being censored away: schooling (a, b) 3/10; health 2/5;
    housing 1/2; income 3/10.
    Check: Σ w_j h_j(k) = 1/4 × 3/10 + 1/2 × 2/5 + 1/8 × 1/2 + 1/8 × 3/10
         = 6/80 + 16/80 + 5/80 + 3/80 = 30/80 = 3/8 = M0.
    Contributions w_j h_j(k) / M0: schooling 6/30 = 1/5, health 16/30 = 8/15,
    housing 5/30 = 1/6, income 3/30 = 1/10 (summing to 1).
    Vulnerable (1/5 ≤ c < 1/3): c, 3/10. Severe (poor, c ≥ 1/2): a and d, 5/10 = 1/2.
    """
    await set_thresholds(client, users, line=LINE_FEN // 100)
    a = await world.household(size=1)
    await members(session, a, education=Education.none)
    await patch(client, users, a, safe_housing=False)
    b = await world.household(size=2)
    await members(session, b, education=Education.none)
    c = await world.household(size=3)
    await members(session, c, education=Education.none)
    await add_income(client, users, c, 3 * LINE_FEN + 3)  # 1 fen a head above the line
    d = await world.household(size=4)
    await members(session, d, position=3, health=Health.serious_illness)
    await patch(client, users, d, safe_housing=False)
    await add_income(client, users, d, 8 * LINE_FEN)

    body = await figures(
        client,
        users,
        world.county.village,
        weights="schooling:1/4,health:1/2,housing:1/8,income:1/8",
        k="1/3",
    )

    assert (body["households"], body["poor_households"], body["n"], body["q"]) == (4, 3, 10, 7)
    assert exact(body, "k", "H", "A", "M0") == {
        "k": "1/3",
        "H": "7/10",
        "A": "15/28",
        "M0": "3/8",
    }
    assert (body["H"], body["A"], body["M0"]) == (0.7, 0.535714, 0.375)
    assert [i["name"] for i in body["indicators"]] == ["schooling", "health", "housing", "income"]
    assert by_indicator(body, "weight") == {
        "schooling": "1/4",
        "health": "1/2",
        "housing": "1/8",
        "income": "1/8",
    }
    assert by_indicator(body, "uncensored_headcount") == {
        "schooling": "3/5",
        "health": "2/5",
        "housing": "1/2",
        "income": "3/10",
    }
    assert by_indicator(body, "censored_headcount") == {
        "schooling": "3/10",
        "health": "2/5",
        "housing": "1/2",
        "income": "3/10",
    }
    assert by_indicator(body, "contribution") == {
        "schooling": "1/5",
        "health": "8/15",
        "housing": "1/6",
        "income": "1/10",
    }
    assert exact(body, "vulnerable", "severe") == {"vulnerable": "3/10", "severe": "1/2"}


async def test_a_score_of_exactly_k_made_of_fractions_counts_as_poor(
    client, users, world, session
) -> None:
    # 1/6 + 3 × 1/18 is exactly 1/3: the k test is made with fractions, not floats.
    household = await world.household(size=2)
    await members(session, household, education=Education.none, medical_insurance=False)
    await patch(client, users, household, safe_housing=False, safe_drinking_water=False)
    body = await figures(
        client,
        users,
        world.county.village,
        weights="schooling:1/6,housing:1/18,drinking_water:1/18,medical_insurance:1/18,health:2/3",
        k="1/3",
    )
    assert (body["n"], body["q"]) == (2, 2)
    assert exact(body, "H", "A", "M0") == {"H": "1", "A": "1/3", "M0": "1/3"}


async def test_a_score_just_under_k_is_not_poor(client, users, world, session) -> None:
    household = await world.household(size=2)
    await members(session, household, education=Education.none)
    body = await figures(
        client, users, world.county.village, weights="schooling:1/3,health:2/3", k="0.334"
    )
    assert (body["q"], body["H_exact"], body["vulnerable_exact"]) == (0, "0", "1")


async def test_each_default_indicator_reads_its_rule_from_the_file_card(
    client, users, world, session
) -> None:
    """Household sizes tell the indicators apart: the household of size s is deprived
    in one indicator only, so that indicator's uncensored headcount is s / n."""
    await set_thresholds(client, users, line=LINE_FEN // 100)
    # Deprived in nothing, though close: children of 5 and 16, and one without a
    # birth year, out of school; one of 15 in school.
    fine = await well_off(client, users, world, session, 4)
    await members(session, fine, position=0, birth_year=THIS_YEAR - 5, in_school=False)
    await members(session, fine, position=1, birth_year=THIS_YEAR - 16, in_school=False)
    await members(session, fine, position=2, birth_year=THIS_YEAR - 15, in_school=True)
    await members(session, fine, position=3, birth_year=None, in_school=False)

    schooling = await well_off(client, users, world, session, 1)
    await members(session, schooling, education=Education.preschool)
    attendance = await well_off(client, users, world, session, 2)
    await members(session, attendance, position=1, birth_year=THIS_YEAR - 6, in_school=False)
    health = await well_off(client, users, world, session, 3)
    await members(session, health, position=2, health=Health.disabled)
    uninsured_card = await well_off(client, users, world, session, 5)
    await patch(client, users, uninsured_card, basic_medical=False)
    uninsured_member = await well_off(client, users, world, session, 9)
    await members(session, uninsured_member, position=4, medical_insurance=False)
    housing = await well_off(client, users, world, session, 6)
    await patch(client, users, housing, safe_housing=False)
    water = await well_off(client, users, world, session, 7)
    await patch(client, users, water, safe_drinking_water=False)
    labour = await well_off(client, users, world, session, 8)
    await members(session, labour, labour=Labour.lost)
    await members(session, labour, position=0, labour=Labour.none)
    income = await world.household(size=10)  # exactly at the line: deprived
    await patch(client, users, income, **dict.fromkeys(GUARANTEES, True))
    await members(session, income, medical_insurance=True)
    await add_income(client, users, income, 10 * LINE_FEN)

    body = await figures(client, users, world.county.county)
    assert body["n"] == 4 + 1 + 2 + 3 + 5 + 9 + 6 + 7 + 8 + 10 == 55
    assert by_indicator(body, "uncensored_headcount") == {
        "schooling": "1/55",
        "attendance": "2/55",
        "health": "3/55",
        "medical_insurance": "14/55",
        "housing": "6/55",
        "drinking_water": "7/55",
        "labour": "8/55",
        "income": "2/11",
    }
    # Default weights: 1/6 each in education and health, 1/12 each in living standard;
    # nobody reaches k = 1/3 with one deprivation.
    assert by_indicator(body, "weight")["schooling"] == "1/6"
    assert by_indicator(body, "weight")["income"] == "1/12"
    assert (body["k_exact"], body["q"], body["M0_exact"]) == ("1/3", 0, "0")


async def test_the_catalogue_lists_each_rule_and_default_weights_summing_to_one(
    client, users
) -> None:
    officer = await users.make(Role.officer)
    response = await client.get("/v1/assessment/mpi/indicators", headers=users.auth(officer))
    assert response.status_code == 200, response.text
    catalogue = response.json()
    assert [i["name"] for i in catalogue] == [
        "schooling",
        "attendance",
        "health",
        "medical_insurance",
        "housing",
        "drinking_water",
        "labour",
        "income",
    ]
    assert all(i["rule"] for i in catalogue)
    assert sum(Fraction(i["default_weight_exact"]) for i in catalogue) == 1


async def test_weights_not_summing_to_one_are_refused(client, users, world) -> None:
    response = await mpi(
        client, users, world.county.county, weights="schooling:1/3,health:1/3,housing:0.333"
    )
    assert response.status_code == 422
    assert response.json()["field"] == "weights"
    assert "2999/3000" in response.json()["detail"]


async def test_a_weight_of_zero_is_refused(client, users, world) -> None:
    response = await mpi(client, users, world.county.county, weights="schooling:1,health:0")
    assert response.status_code == 422 and response.json()["field"] == "weights"


async def test_an_unknown_indicator_is_refused(client, users, world) -> None:
    response = await mpi(client, users, world.county.county, weights="schooling:1/2,cooking:1/2")
    assert response.status_code == 422
    assert response.json()["field"] == "weights"
    assert "cooking" in response.json()["detail"]


async def test_a_cutoff_that_is_not_a_fraction_in_range_is_refused(client, users, world) -> None:
    for k in ("one third", "1/0", "0", "3/2", "1e-9"):
        response = await mpi(client, users, world.county.county, k=k)
        assert response.status_code == 422, k
        assert response.json()["field"] == "k"


async def test_the_income_indicator_leaves_out_a_self_dealing_sale_until_ruled(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, line=LINE_FEN // 100)
    coop = await world.cooperative()
    household = await world.household(size=1)
    phone = "13900004321"
    await patch(client, users, household, phone=phone)
    eggs = await supplied_product(world, coop, [(household, 10_000)], price_fen=20_000)
    own = await users.make(Role.buyer, phone=phone)
    order = await delivered_cod_order(client, users, [(eggs, 1)], buyer=own)
    await recognise(session, order)  # 19,000 fen after the fee, but flagged

    body = await figures(client, users, world.county.village, weights="income:1", k="1")
    assert (body["n"], body["q"]) == (1, 1)

    flag = (await session.scalars(select(AttributionFlag))).one()
    officer = await users.make(Role.officer)
    ruled = await client.post(
        f"/v1/attribution/flags/{flag.id}/ruling",
        json={"ruling": "counted", "reason": "the phone was reassigned"},
        headers=users.auth(officer),
    )
    assert ruled.status_code == 200, ruled.text
    body = await figures(client, users, world.county.village, weights="income:1", k="1")
    assert (body["n"], body["q"]) == (1, 0)


async def test_the_income_indicator_follows_a_refund(client, users, world, session) -> None:
    await set_thresholds(client, users, line=LINE_FEN // 100)
    coop = await world.cooperative()
    household = await world.household(size=1)
    eggs = await supplied_product(world, coop, [(household, 10_000)], price_fen=6_000)
    order = await delivered_cod_order(client, users, [(eggs, 2)])
    await recognise(session, order)  # 11,400 fen: above the line
    before = await figures(client, users, world.county.village, weights="income:1")
    assert before["q"] == 0

    line_id = order["fulfilments"][0]["lines"][0]["id"]
    await refund(client, users, order, str(coop.id), lines=[{"line_id": line_id, "quantity": 1}])
    after = await figures(client, users, world.county.village, weights="income:1")
    assert after["q"] == 1  # 5,700 fen left
    assert by_indicator(after, "censored_headcount") == {"income": "1"}


async def test_a_region_without_households_answers_zeros(client, users, world) -> None:
    await set_thresholds(client, users)
    await world.household()  # in the other village
    body = await figures(client, users, world.county.village2)
    assert (body["households"], body["n"], body["q"]) == (0, 0, 0)
    assert exact(body, "H", "A", "M0", "vulnerable", "severe") == dict.fromkeys(
        ("H", "A", "M0", "vulnerable", "severe"), "0"
    )
    assert {i["contribution_exact"] for i in body["indicators"]} == {"0"}
    assert body["M0"] == 0


async def test_deregistered_households_are_not_counted(client, users, world, session) -> None:
    await world.household(size=2)
    gone = await world.household(size=3)
    await session.execute(
        update(Household).where(Household.id == gone.id).values(status="deregistered")
    )
    body = await figures(client, users, world.county.village, weights="housing:1")
    assert (body["households"], body["n"]) == (1, 2)


async def test_the_income_indicator_needs_the_years_thresholds(client, users, world) -> None:
    await world.household()
    response = await mpi(client, users, world.county.county, year=2031)
    assert response.status_code == 404 and response.json()["field"] == "year"
    without_income = await mpi(client, users, world.county.county, year=2031, weights="labour:1")
    assert without_income.status_code == 200, without_income.text


async def test_an_officer_of_another_county_is_refused(client, users, world) -> None:
    await set_thresholds(client, users)
    await world.household()
    stranger = await users.make(Role.officer, county_code=world.county.other_county)
    response = await mpi(client, users, world.county.county, actor=stranger)
    assert response.status_code == 403
    admin = await users.make(Role.admin)
    provincial = await mpi(client, users, world.county.province, actor=admin)
    assert provincial.status_code == 200 and provincial.json()["n"] == 3
