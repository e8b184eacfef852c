"""The exit workflow (proposal, public notice, objections, decision) and monitoring after exit."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.main import create_app
from app.settings import Settings
from services.assessment import thresholds
from services.assessment.models import ExitProposal
from services.db import create_engine
from services.households import service as households
from services.households.models import Household, IncomeKind, StatusChange
from services.schema import upgrade
from services.users.models import Role, User
from tests.assessment_helpers import THIS_YEAR, add_income, set_thresholds
from tests.conftest import _PASSWORD_HASH, JWT_SECRET, create_database, drop_database
from tests.factories import PII_KEY, Builder, County, build_regions
from tests.test_assessment_households import guarantee
from tests.test_orders_concurrency import auth


async def exit_ready(
    client, users, world, *, income_fen: int = 20_000, village: str | None = None
) -> Household:
    """A one-person household, every guarantee holding, with `income_fen` this year."""
    household = await world.household(village, size=1)
    await guarantee(client, users, household)
    await add_income(client, users, household, income_fen)
    return household


async def propose(
    client, users, household: Household, *, actor: User | None = None, year: int = THIS_YEAR
) -> httpx.Response:
    actor = actor or await users.make(Role.officer)
    return await client.post(
        f"/v1/households/{household.id}/exit-proposals",
        json={"year": year, "reason": "income from the egg cooperative above the line"},
        headers=users.auth(actor),
    )


async def proposed(client, users, household: Household) -> dict[str, Any]:
    response = await propose(client, users, household)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def end_notice(session: AsyncSession, proposal_id: str) -> None:
    """Let the public notice pass: its end moves into the past."""
    await session.execute(
        update(ExitProposal)
        .where(ExitProposal.id == uuid.UUID(proposal_id))
        .values(notice_ends_at=datetime.now(UTC) - timedelta(seconds=1))
    )


async def decide(
    client, users, proposal_id: str, decision: str, reason: str = "notice passed without cause"
) -> httpx.Response:
    officer = await users.make(Role.officer)
    return await client.post(
        f"/v1/exit-proposals/{proposal_id}/decision",
        json={"decision": decision, "reason": reason},
        headers=users.auth(officer),
    )


async def object_to(client, users, proposal_id: str, text: str) -> httpx.Response:
    officer = await users.make(Role.officer)
    return await client.post(
        f"/v1/exit-proposals/{proposal_id}/objections",
        json={"objector": "村民 李四", "text": text},
        headers=users.auth(officer),
    )


async def status_of(client, users, household: Household) -> str:
    officer = await users.make(Role.officer)
    response = await client.get(f"/v1/households/{household.id}", headers=users.auth(officer))
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def history(client, users, household: Household) -> list[tuple[str | None, str]]:
    officer = await users.make(Role.officer)
    response = await client.get(
        f"/v1/households/{household.id}/status-history", headers=users.auth(officer)
    )
    assert response.status_code == 200, response.text
    return [(c["from_status"], c["to_status"]) for c in response.json()]


async def exited(client, users, world, session, *, income_fen: int) -> Household:
    """A household taken through the whole workflow to `exited`."""
    household = await exit_ready(client, users, world, income_fen=income_fen)
    proposal = await proposed(client, users, household)
    await end_notice(session, proposal["id"])
    approved = await decide(client, users, proposal["id"], "approve")
    assert approved.status_code == 200, approved.text
    return household


# --- proposal -----------------------------------------------------------------------------


async def test_a_proposal_for_a_household_that_is_not_eligible_is_refused_naming_each_reason(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, line=100)
    household = await world.household(size=2)
    await guarantee(client, users, household, basic_medical=False, safe_drinking_water=False)
    await add_income(client, users, household, 30_000)  # 150 yuan a head: above the line

    response = await propose(client, users, household)

    assert response.status_code == 409
    problem = response.json()
    assert problem["type"] == "/problems/not-exit-eligible"
    assert problem["reasons"] == ["basic_medical", "safe_drinking_water"]
    assert "basic_medical" in problem["detail"] and "safe_drinking_water" in problem["detail"]
    assert "income" not in problem["reasons"]
    assert await status_of(client, users, household) == "registered"
    assert await session.scalar(select(func.count()).select_from(ExitProposal)) == 0


async def test_income_not_above_the_line_is_named_with_the_figures(client, users, world) -> None:
    await set_thresholds(client, users, line=100)
    household = await exit_ready(client, users, world, income_fen=10_000)  # exactly the line

    response = await propose(client, users, household)

    assert response.status_code == 409
    assert response.json()["reasons"] == ["income"]
    assert "10000 fen per person" in response.json()["detail"]


async def test_a_proposal_moves_the_household_to_exit_proposed_for_the_notice_period(
    client, users, world
) -> None:
    await set_thresholds(client, users, line=100)
    household = await exit_ready(client, users, world, income_fen=20_000)

    proposal = await proposed(client, users, household)

    assert proposal["status"] == "open" and proposal["from_status"] == "registered"
    assert proposal["year"] == THIS_YEAR and proposal["objection_count"] == 0
    starts = datetime.fromisoformat(proposal["notice_starts_at"])
    ends = datetime.fromisoformat(proposal["notice_ends_at"])
    assert ends - starts == timedelta(days=7)
    evidence = proposal["evidence"]
    assert evidence["exit_eligible"] is True and evidence["per_capita_fen"] == 20_000
    assert evidence["household_id"] == str(household.id)
    assert "head_name" not in evidence  # the notice publishes no personal data
    assert await status_of(client, users, household) == "exit_proposed"
    assert (await history(client, users, household))[-1] == ("registered", "exit_proposed")


async def test_a_proposed_household_leaves_exit_proposed_only_by_a_decision(
    client, users, world
) -> None:
    await set_thresholds(client, users, line=100)
    household = await exit_ready(client, users, world, income_fen=20_000)
    await proposed(client, users, household)
    officer = await users.make(Role.officer)
    response = await client.post(
        f"/v1/households/{household.id}/status",
        json={"status": "registered", "reason": "changed my mind"},
        headers=users.auth(officer),
    )
    assert response.status_code == 409
    assert await status_of(client, users, household) == "exit_proposed"


async def test_an_ordinary_member_household_is_not_proposed(client, users, world) -> None:
    await set_thresholds(client, users, line=100)
    household = await exit_ready(client, users, world, income_fen=20_000)
    officer = await users.make(Role.officer)
    patched = await client.patch(
        f"/v1/households/{household.id}", json={"poor": False}, headers=users.auth(officer)
    )
    assert patched.status_code == 200

    response = await propose(client, users, household)

    assert response.status_code == 409 and response.json()["type"] == "/problems/not-poor"


async def test_an_officer_of_another_county_cannot_propose(client, users, world) -> None:
    await set_thresholds(client, users, line=100)
    household = await exit_ready(client, users, world, income_fen=20_000)
    stranger = await users.make(Role.officer, county_code=world.county.other_county)

    response = await propose(client, users, household, actor=stranger)

    # As the households API answers: outside one's county the household does not exist.
    assert response.status_code == 404
    assert await status_of(client, users, household) == "registered"


async def test_a_proposal_needs_thresholds_for_its_year(client, users, world) -> None:
    household = await world.household(size=1)

    response = await propose(client, users, household, year=2012)  # none seeded before 2013

    assert response.status_code == 404 and response.json()["field"] == "year"


async def test_a_proposal_cannot_rest_on_a_year_not_begun(client, users, world) -> None:
    await set_thresholds(client, users, THIS_YEAR + 1, line=100)
    household = await exit_ready(client, users, world)

    response = await propose(client, users, household, year=THIS_YEAR + 1)

    assert response.status_code == 422 and response.json()["field"] == "year"


# --- notice and objections ----------------------------------------------------------------


async def test_an_objection_during_the_notice_is_recorded_and_after_it_refused(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, line=100)
    household = await exit_ready(client, users, world)
    proposal = await proposed(client, users, household)

    during = await object_to(client, users, proposal["id"], "他家收入是亲戚代买的")
    assert during.status_code == 201, during.text
    assert during.json()["objector"] == "村民 李四"

    await end_notice(session, proposal["id"])
    after = await object_to(client, users, proposal["id"], "a late objection")
    assert after.status_code == 409
    assert after.json()["type"] == "/problems/notice-ended"

    officer = await users.make(Role.officer)
    read = await client.get(f"/v1/exit-proposals/{proposal['id']}", headers=users.auth(officer))
    assert read.status_code == 200
    assert [o["text"] for o in read.json()["objections"]] == ["他家收入是亲戚代买的"]
    assert read.json()["objection_count"] == 1


async def test_a_decision_inside_the_notice_period_is_a_conflict(client, users, world) -> None:
    await set_thresholds(client, users, line=100)
    household = await exit_ready(client, users, world)
    proposal = await proposed(client, users, household)

    response = await decide(client, users, proposal["id"], "approve")

    assert response.status_code == 409
    problem = response.json()
    assert problem["type"] == "/problems/notice-running"
    assert datetime.fromisoformat(problem["notice_ends_at"]) == datetime.fromisoformat(
        proposal["notice_ends_at"]
    )
    assert problem["notice_ends_at"] in problem["detail"]
    assert await status_of(client, users, household) == "exit_proposed"


# --- decision -----------------------------------------------------------------------------


async def test_approval_after_the_notice_exits_the_household_and_the_history_shows_each_step(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, line=100)
    household = await exit_ready(client, users, world)
    proposal = await proposed(client, users, household)
    await end_notice(session, proposal["id"])

    response = await decide(client, users, proposal["id"], "approve", "no objection in 7 days")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "approved"
    assert body["decision_reason"] == "no objection in 7 days"
    assert body["decided_by"] and body["decided_at"]
    assert await status_of(client, users, household) == "exited"
    assert await history(client, users, household) == [
        (None, "registered"),
        ("registered", "exit_proposed"),
        ("exit_proposed", "exited"),
    ]
    last = (
        await session.scalars(
            select(StatusChange)
            .where(StatusChange.household_id == household.id)
            .order_by(StatusChange.id.desc())
        )
    ).first()
    assert last is not None and "no objection in 7 days" in last.reason


async def test_rejection_returns_the_household_to_registered(client, users, world, session) -> None:
    await set_thresholds(client, users, line=100)
    household = await exit_ready(client, users, world)
    proposal = await proposed(client, users, household)
    await object_to(client, users, proposal["id"], "the income was bought by a relative")
    await end_notice(session, proposal["id"])

    response = await decide(client, users, proposal["id"], "reject", "objection upheld")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "rejected"
    assert len(response.json()["objections"]) == 1
    assert await status_of(client, users, household) == "registered"
    assert (await history(client, users, household))[-1] == ("exit_proposed", "registered")
    again = await propose(client, users, household)  # a new proposal may follow later
    assert again.status_code == 201, again.text


async def test_a_second_decision_is_a_conflict(client, users, world, session) -> None:
    await set_thresholds(client, users, line=100)
    household = await exit_ready(client, users, world)
    proposal = await proposed(client, users, household)
    await end_notice(session, proposal["id"])
    first = await decide(client, users, proposal["id"], "approve")
    assert first.status_code == 200

    second = await decide(client, users, proposal["id"], "reject", "changed our mind")

    assert second.status_code == 409
    assert second.json()["type"] == "/problems/proposal-decided"
    assert second.json()["proposal_status"] == "approved"
    assert await status_of(client, users, household) == "exited"


async def test_an_officer_of_another_county_does_not_see_or_decide_a_proposal(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, line=100)
    household = await exit_ready(client, users, world)
    proposal = await proposed(client, users, household)
    await end_notice(session, proposal["id"])
    stranger = await users.make(Role.officer, county_code=world.county.other_county)

    read = await client.get(f"/v1/exit-proposals/{proposal['id']}", headers=users.auth(stranger))
    decided = await client.post(
        f"/v1/exit-proposals/{proposal['id']}/decision",
        json={"decision": "approve", "reason": "x"},
        headers=users.auth(stranger),
    )

    assert (read.status_code, decided.status_code) == (404, 404)


async def test_proposals_are_listed_by_status_and_region_a_page_at_a_time(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, line=100)
    made = [await proposed(client, users, await exit_ready(client, users, world)) for _ in range(3)]
    lower = await exit_ready(client, users, world, village=world.county.village2)
    in_village2 = await proposed(client, users, lower)
    await end_notice(session, made[0]["id"])
    assert (await decide(client, users, made[0]["id"], "reject")).status_code == 200
    officer = await users.make(Role.officer)

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"status": "open", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = await client.get("/v1/exit-proposals", params=params, headers=users.auth(officer))
        assert page.status_code == 200, page.text
        seen += [p["id"] for p in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted([made[1]["id"], made[2]["id"], in_village2["id"]])

    village2 = await client.get(
        "/v1/exit-proposals",
        params={"region": world.county.village2},
        headers=users.auth(officer),
    )
    assert village2.status_code == 200
    assert [p["id"] for p in village2.json()["items"]] == [in_village2["id"]]


# --- monitoring ---------------------------------------------------------------------------


async def sweep(client, users, region: str, year: int = THIS_YEAR) -> httpx.Response:
    officer = await users.make(Role.officer)
    return await client.post(
        "/v1/assessment/monitoring",
        json={"region": region, "year": year},
        headers=users.auth(officer),
    )


async def test_the_monitoring_sweep_moves_only_exited_households_with_a_monitoring_flag(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, line=100, monitoring=150)
    fragile = await exited(client, users, world, session, income_fen=12_000)  # under 150
    steady = await exited(client, users, world, session, income_fen=20_000)
    poor = await world.household(size=1)
    await add_income(client, users, poor, 5_000)  # flagged, but never exited

    response = await sweep(client, users, world.county.county)

    assert response.status_code == 200, response.text
    moved = response.json()["moved"]
    assert [m["household_id"] for m in moved] == [str(fragile.id)]
    assert moved[0]["monitoring_reasons"] == ["under_monitoring_line"]
    assert (moved[0]["per_capita_fen"], moved[0]["monitoring_line_fen"]) == (12_000, 15_000)
    assert await status_of(client, users, fragile) == "monitored"
    assert await status_of(client, users, steady) == "exited"
    assert await status_of(client, users, poor) == "registered"
    reason = (
        await session.scalars(
            select(StatusChange.reason)
            .where(StatusChange.household_id == fragile.id)
            .order_by(StatusChange.id.desc())
        )
    ).first()
    assert reason is not None and str(THIS_YEAR) in reason and "under_monitoring_line" in reason

    again = await sweep(client, users, world.county.county)
    assert again.json()["moved"] == []  # already monitored: nothing moves twice


async def test_a_monitored_household_returning_to_poverty_is_a_recorded_transition(
    client, users, world, session
) -> None:
    await set_thresholds(client, users, line=100, monitoring=150)
    household = await exited(client, users, world, session, income_fen=12_000)
    assert (await sweep(client, users, household.village_code)).status_code == 200
    officer = await users.make(Role.officer)

    returned = await client.post(
        f"/v1/households/{household.id}/status",
        json={"status": "returned", "reason": "the head fell ill; income under the line"},
        headers=users.auth(officer),
    )

    assert returned.status_code == 200, returned.text
    assert await history(client, users, household) == [
        (None, "registered"),
        ("registered", "exit_proposed"),
        ("exit_proposed", "exited"),
        ("exited", "monitored"),
        ("monitored", "returned"),
    ]


async def test_an_officer_of_another_county_cannot_sweep_it(client, users, world) -> None:
    await set_thresholds(client, users)
    stranger = await users.make(Role.officer, county_code=world.county.other_county)

    response = await client.post(
        "/v1/assessment/monitoring",
        json={"region": world.county.county, "year": THIS_YEAR},
        headers=users.auth(stranger),
    )

    assert response.status_code == 403


# --- races, on a database of their own (committed data, separate connections) -------------


@pytest.fixture(scope="module")
async def live(server_url: str, tmp_path_factory: Any) -> AsyncIterator[dict[str, Any]]:
    name = f"marketplace_exits_{uuid.uuid4().hex[:10]}"
    url = await create_database(server_url, name)
    engine = create_engine(url)
    await upgrade(engine)
    settings = Settings(
        database_url=url,
        jwt_secret=JWT_SECRET,
        pii_key=PII_KEY.decode(),
        data_dir=tmp_path_factory.mktemp("exits"),
        log_level="WARNING",
        run_worker_in_process=False,
        db_pool_size=20,
    )
    app = create_app(settings)
    factory = app.state.sessionmaker
    async with factory() as session, session.begin():
        admin = User(email="exits-admin@example.com", password_hash=_PASSWORD_HASH, role=Role.admin)
        session.add(admin)
        await session.flush()
        world = Builder(session, admin, await build_regions(session))
        officer = User(
            email="exits-officer@example.com",
            password_hash=_PASSWORD_HASH,
            role=Role.officer,
            county_code=world.county.county,
        )
        session.add(officer)
        await thresholds.put_thresholds(
            session,
            admin,
            THIS_YEAR,
            thresholds.Figures(poverty_line_yuan=100, monitoring_line_yuan=150),
        )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://exits") as client:
        yield {"client": client, "factory": factory, "admin": admin, "officer": officer}
    await app.state.engine.dispose()
    await engine.dispose()
    await drop_database(server_url, name)


async def committed_ready_household(live: dict[str, Any]) -> Household:
    async with live["factory"]() as session, session.begin():
        admin = live["admin"]
        world = Builder(session, admin, County())
        household = await world.household(size=1)
        await households.update_household(
            session, admin, household.id, dict.fromkeys(households.GUARANTEES, True)
        )
        await households.add_income(
            session,
            admin,
            household.id,
            households.NewIncome(year=THIS_YEAR, kind=IncomeKind.wage, amount_fen=20_000),
            today=date.today(),
        )
        return household


async def test_concurrent_proposals_for_one_household_make_one(live) -> None:
    household = await committed_ready_household(live)

    responses = await asyncio.gather(
        *(
            live["client"].post(
                f"/v1/households/{household.id}/exit-proposals",
                json={"year": THIS_YEAR, "reason": f"proposal {i}"},
                headers=auth(live["officer"]),
            )
            for i in range(8)
        )
    )

    assert Counter(r.status_code for r in responses) == {201: 1, 409: 7}
    async with live["factory"]() as session:
        assert (
            await session.scalar(
                select(func.count())
                .select_from(ExitProposal)
                .where(ExitProposal.household_id == household.id)
            )
            == 1
        )
        changes = await session.scalars(
            select(StatusChange.to_status).where(StatusChange.household_id == household.id)
        )
        assert sorted(changes.all()) == ["exit_proposed", "registered"]


async def test_concurrent_decisions_on_one_proposal_make_one(live) -> None:
    household = await committed_ready_household(live)
    proposed = await live["client"].post(
        f"/v1/households/{household.id}/exit-proposals",
        json={"year": THIS_YEAR, "reason": "above the line"},
        headers=auth(live["officer"]),
    )
    assert proposed.status_code == 201, proposed.text
    proposal_id = uuid.UUID(proposed.json()["id"])
    async with live["factory"]() as session, session.begin():
        await end_notice(session, str(proposal_id))

    responses = await asyncio.gather(
        *(
            live["client"].post(
                f"/v1/exit-proposals/{proposal_id}/decision",
                json={"decision": "approve" if i % 2 else "reject", "reason": f"decision {i}"},
                headers=auth(live["officer"]),
            )
            for i in range(8)
        )
    )

    assert Counter(r.status_code for r in responses) == {200: 1, 409: 7}
    winner = next(r.json() for r in responses if r.status_code == 200)
    async with live["factory"]() as session:
        stored = await session.get(Household, household.id)
        assert stored is not None
        expected = "exited" if winner["status"] == "approved" else "registered"
        assert stored.status.value == expected
        changes = await session.scalars(
            select(StatusChange.to_status).where(StatusChange.household_id == household.id)
        )
        assert Counter(changes.all())[expected] == (2 if expected == "registered" else 1)
