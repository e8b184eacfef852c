"""The ledger audit: a clean ledger passes; every kind of tampering is named, to the fen."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app.cli import audit_ledger
from services.ledger import audit
from services.ledger.audit import Problem
from services.ledger.models import LedgerEntry
from services.users.models import Role
from tests.committed import CommittingUsers, committed_app
from tests.ledger_helpers import delivered_cod_order, recognise, supplied_product
from tests.orders_helpers import key


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def trade(client, users, world, session) -> dict[str, Any]:
    """Recognised cash orders with refunds before and after recognition: a clean ledger."""
    coop = await world.cooperative()
    a, b = await world.household(), await world.household()
    product = await supplied_product(world, coop, [(a, 6_000), (b, 2_500)], price_fen=3_333)
    manager = await users.make(Role.manager, cooperative_id=coop.id)
    after = await delivered_cod_order(client, users, [(product, 3)])
    await recognise(session, after)
    before = await delivered_cod_order(client, users, [(product, 4)])
    for order in (after, before):
        response = await client.post(
            f"/v1/orders/{order['id']}/refunds",
            json={"reason": "one was crushed", "amount_fen": 1_000},
            headers=users.auth(manager) | key(),
        )
        assert response.status_code == 201, response.text
    await recognise(session, before)
    line = after["fulfilments"][0]["lines"][0]["id"]
    return {"coop": coop, "a": a, "b": b, "order": after, "line": uuid.UUID(line)}


async def test_a_clean_ledger_has_no_differences(trade, session, sessionmaker):
    assert await audit.audit(session, now=now()) == []
    printed: list[str] = []
    assert await audit_ledger(sessionmaker, echo=printed.append) is True
    assert printed[-1].startswith("ledger audit: ") and printed[-1].endswith("no differences")


async def test_a_refund_written_behind_the_ledgers_back_is_reported_per_party(
    trade, session, sessionmaker
):
    # 1,000 fen more refunded than the ledger was told of: net 8,550 -> 7,600 (fee kept 399).
    await session.execute(
        text("UPDATE order_lines SET refunded_fen = refunded_fen + 1000 WHERE id = :id"),
        {"id": trade["line"]},
    )
    found = await audit.audit(session, now=now())
    assert {(d.problem, d.line_id, d.party, d.expected_fen, d.held_fen) for d in found} == {
        (Problem.mismatch, trade["line"], trade["a"].id, 4_560, 5_130),
        (Problem.mismatch, trade["line"], trade["b"].id, 1_900, 2_138),
        (Problem.mismatch, trade["line"], None, 1_140, 1_282),
    }
    printed: list[str] = []
    assert await audit_ledger(sessionmaker, as_json=True, echo=printed.append) is False
    rows = [json.loads(line) for line in printed]
    assert rows[-1]["summary"] == {
        "lines_checked": rows[-1]["summary"]["lines_checked"],
        "differences": 3,
        "by_problem": {"mismatch": 3},
        "clean": False,
    }
    assert {r["party"] for r in rows[:-1]} == {
        str(trade["a"].id),
        str(trade["b"].id),
        "cooperative",
    }
    assert sum(r["delta_fen"] for r in rows[:-1]) == 8_550 - 7_600


async def test_an_extra_entry_is_reported(trade, session):
    entry = (
        await session.scalars(
            select(LedgerEntry).where(
                LedgerEntry.line_id == trade["line"], LedgerEntry.household_id.is_(None)
            )
        )
    ).first()
    assert entry is not None
    await session.execute(
        text(
            "INSERT INTO ledger_entries (line_id, order_id, fulfilment_id, product_id,"
            " cooperative_id, county_code, buyer_id, household_id, kind, amount_fen, currency,"
            " year, effective_at)"
            " SELECT line_id, order_id, fulfilment_id, product_id, cooperative_id, county_code,"
            " buyer_id, household_id, kind, 7, currency, year, effective_at"
            " FROM ledger_entries WHERE id = :id"
        ),
        {"id": entry.id},
    )
    [difference] = await audit.audit(session, now=now())
    assert (difference.problem, difference.party, difference.delta_fen) == (
        Problem.mismatch,
        None,
        7,
    )


async def write_entry(
    session: Any,
    line_id: uuid.UUID,
    *,
    amount_fen: int,
    as_line: uuid.UUID | None = None,
    buyer: uuid.UUID | None = None,
) -> None:
    """An entry written by hand, copied from the line and its order as recognition copies
    them; `as_line` or `buyer` make it name another line or buyer than the real ones."""
    await session.execute(
        text(
            "INSERT INTO ledger_entries (line_id, order_id, fulfilment_id, product_id,"
            " cooperative_id, county_code, buyer_id, kind, amount_fen, currency, year,"
            " effective_at)"
            " SELECT coalesce(CAST(:as_line AS uuid), l.id), l.order_id, l.fulfilment_id,"
            " l.product_id, l.cooperative_id, l.county_code,"
            " coalesce(CAST(:buyer AS uuid), o.buyer_id), 'recognition', :amount, o.currency,"
            " 2026, now()"
            " FROM order_lines l JOIN orders o ON o.id = l.order_id WHERE l.id = :id"
        ),
        {"id": line_id, "as_line": as_line, "buyer": buyer, "amount": amount_fen},
    )


async def test_recognitions_without_entries_and_entries_without_recognition(
    client, users, world, session
):
    coop = await world.cooperative()
    product = await supplied_product(world, coop, [], price_fen=1_000)
    order = await delivered_cod_order(client, users, [(product, 2)])
    fulfilment, line = order["fulfilments"][0]["id"], order["fulfilments"][0]["lines"][0]["id"]
    # Entries for the line of a fulfilment that was never recognised...
    await write_entry(session, uuid.UUID(line), amount_fen=1_900)
    found = await audit.audit(session, now=now())
    assert [(d.problem, str(d.line_id), d.held_fen) for d in found] == [
        (Problem.unrecognised_entries, line, 1_900)
    ]
    # ...and a recognition written with no entries (and no payout).
    other = await delivered_cod_order(client, users, [(product, 1)])
    other_fulfilment = other["fulfilments"][0]["id"]
    await session.execute(
        text(
            "INSERT INTO ledger_recognitions (fulfilment_id, order_id, county_code,"
            " recognised_at, lines) SELECT id, order_id, county_code, now(), 1"
            " FROM fulfilments WHERE id = :id"
        ),
        {"id": uuid.UUID(other_fulfilment)},
    )
    found = await audit.audit(session, now=now())
    assert {(d.problem, str(d.fulfilment_id), d.expected_fen, d.held_fen) for d in found} == {
        (Problem.unrecognised_entries, fulfilment, 0, 1_900),
        (Problem.missing_entries, other_fulfilment, 950, 0),
        (Problem.missing_payout, other_fulfilment, 0, 0),
    }


async def test_entries_that_disagree_with_their_line_or_have_none(client, users, world, session):
    """The ledger keeps no foreign keys on what an entry copies from its line; the audit
    checks each entry against its line instead."""
    coop = await world.cooperative()
    product = await supplied_product(world, coop, [], price_fen=1_000)
    order = await delivered_cod_order(client, users, [(product, 2)])
    await recognise(session, order)
    assert await audit.audit(session, now=now()) == []
    line = uuid.UUID(order["fulfilments"][0]["lines"][0]["id"])
    stranger = await users.make()
    # Written as recognition writes, but naming another buyer than the order's...
    await write_entry(session, line, amount_fen=0, buyer=stranger.id)
    # ...and a line that does not exist.
    ghost = uuid.uuid4()
    await write_entry(session, line, amount_fen=0, as_line=ghost)
    found = await audit.audit(session, now=now())
    assert [(d.problem, d.line_id) for d in found] == [
        (Problem.misattributed, line),
        (Problem.misattributed, ghost),
    ]


async def test_delivered_paid_fulfilments_left_unrecognised_past_the_grace(
    client, users, world, session
):
    coop = await world.cooperative()
    product = await supplied_product(world, coop, [], price_fen=1_000)
    order = await delivered_cod_order(client, users, [(product, 3)])
    assert await audit.audit(session, now=now()) == []  # within the hour: the outbox's time
    later = await audit.audit(session, now=now() + timedelta(hours=2))
    assert [(d.problem, str(d.fulfilment_id), d.expected_fen) for d in later] == [
        (Problem.unrecognised, order["fulfilments"][0]["id"], 2_850)
    ]


async def test_a_recognised_fulfilment_without_its_payout_is_reported(trade, session):
    await session.execute(
        text("DELETE FROM payouts WHERE order_id = :id"), {"id": uuid.UUID(trade["order"]["id"])}
    )
    [difference] = await audit.audit(session, now=now())
    assert (difference.problem, difference.expected_fen, difference.line_id) == (
        Problem.missing_payout,
        9_500,  # what was recognised; the refund came after
        None,
    )


async def test_a_payout_or_recognition_naming_another_order_than_its_fulfilment_is_reported(
    trade, session
):
    """Neither keeps foreign keys to what it is written from; the audit checks them."""
    fulfilment = uuid.UUID(trade["order"]["fulfilments"][0]["id"])
    elsewhere = await session.scalar(
        text("SELECT id FROM orders WHERE id <> :id LIMIT 1"), {"id": trade["order"]["id"]}
    )
    assert elsewhere is not None
    await session.execute(
        text("UPDATE payouts SET order_id = :other WHERE fulfilment_id = :id"),
        {"other": elsewhere, "id": fulfilment},
    )
    await session.execute(
        text("UPDATE ledger_recognitions SET order_id = :other WHERE fulfilment_id = :id"),
        {"other": elsewhere, "id": fulfilment},
    )
    found = await audit.audit(session, now=now())
    assert sorted((d.problem, d.fulfilment_id, d.held_fen) for d in found) == [
        (Problem.misattributed_fulfilment, fulfilment, 0),
        (Problem.misattributed_fulfilment, fulfilment, 9_500),
    ]


async def test_small_batches_see_every_line_once(trade, session):
    run = audit.LedgerAudit(session, now=now(), batch_size=1)
    assert [d async for d in run.differences()] == []
    assert run.lines_checked == 2 and run.clean


async def test_running_totals_are_the_sums_of_the_entries(trade, session):
    # Recognitions and refunds before and after recognition: each added to the totals in
    # the transaction that wrote its entries.
    sums = (
        await session.execute(
            text(
                "SELECT household_id, year, buyer_id, sum(amount_fen) FROM ledger_entries"
                " WHERE household_id IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            )
        )
    ).all()
    kept = (
        await session.execute(
            text(
                "SELECT household_id, year, buyer_id, amount_fen FROM ledger_buyer_years"
                " ORDER BY 1, 2, 3"
            )
        )
    ).all()
    assert kept == sums and {row[0] for row in kept} == {trade["a"].id, trade["b"].id}
    per_year = (
        await session.execute(
            text("SELECT household_id, year, amount_fen FROM ledger_household_years ORDER BY 1, 2")
        )
    ).all()
    totals: dict[tuple[uuid.UUID, int], int] = {}
    for household_id, year, _, amount in sums:
        totals[(household_id, year)] = totals.get((household_id, year), 0) + amount
    assert [((h, y), amount) for h, y, amount in per_year] == sorted(totals.items())


async def test_a_running_total_that_is_not_its_entries_sum_is_reported(trade, session):
    household = trade["a"].id
    await session.execute(
        text(
            "UPDATE ledger_buyer_years SET amount_fen = amount_fen + 5"
            " WHERE (household_id, year, buyer_id) = (SELECT household_id, year, buyer_id"
            " FROM ledger_buyer_years WHERE household_id = :h ORDER BY buyer_id LIMIT 1)"
        ),
        {"h": household},
    )
    by_buyer, by_year = await audit.audit(session, now=now())
    assert (by_buyer.problem, by_buyer.party, by_buyer.delta_fen) == (
        Problem.totals_mismatch,
        household,
        5,
    )
    assert by_buyer.buyer_id is not None and by_buyer.fulfilment_id is None
    # The household's year no longer equals its buyers' totals either.
    assert (by_year.problem, by_year.party, by_year.buyer_id, by_year.delta_fen) == (
        Problem.totals_mismatch,
        household,
        None,
        -5,
    )
    assert by_year.as_dict()["year"] == by_buyer.year


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount_fen = amount_fen + 1",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries CASCADE",
    ],
)
async def test_the_ledger_itself_refuses_updates_and_deletes(trade, session, statement):
    with pytest.raises(DBAPIError, match="append-only"):
        async with session.begin_nested():
            await session.execute(text(statement))
    assert await audit.audit(session, now=now()) == []


# --- the command, on a database of its own where everything commits -----------------------------


@pytest.fixture
async def own_database(server_url: str, tmp_path: Any) -> AsyncIterator[dict[str, Any]]:
    async with (
        committed_app(server_url, tmp_path, prefix="marketplace_audit") as own,
        own.app.state.sessionmaker() as session,
    ):
        yield {"url": own.url, "client": own.client, "session": session, "settings": own.settings}


async def marketplace(url: str, tmp_path: Any, *args: str) -> tuple[int, str]:
    env = {**os.environ, "DATABASE_URL": url, "MARKETPLACE_DATA_DIR": str(tmp_path)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


@pytest.mark.slow
async def test_the_commands_recognise_the_backlog_and_audit_it(own_database, tmp_path):
    session = own_database["session"]
    users = CommittingUsers(session, own_database["settings"])
    world = await users.builder()
    coop = await world.cooperative()
    household = await world.household()
    product = await supplied_product(world, coop, [(household, 5_000)], price_fen=2_000)
    await session.commit()
    order = await delivered_cod_order(own_database["client"], users, [(product, 2)])
    url = own_database["url"]

    code, output = await marketplace(url, tmp_path, "ledger-audit", "--grace-minutes", "0")
    assert code == 1, output
    assert "unrecognised" in output and order["fulfilments"][0]["id"] in output

    code, output = await marketplace(url, tmp_path, "ledger-recognise", "--batch-size", "10")
    assert code == 0, output
    assert "recognised 1 lines" in output and "backlog done: 1 lines" in output

    code, output = await marketplace(url, tmp_path, "ledger-audit", "--json")
    assert code == 0, output
    assert json.loads(output.strip().splitlines()[-1])["summary"]["clean"] is True

    await session.execute(
        text("UPDATE order_lines SET refunded_fen = 2000 WHERE order_id = :id"),
        {"id": uuid.UUID(order["id"])},
    )
    await session.commit()
    code, output = await marketplace(url, tmp_path, "ledger-audit")
    assert code == 1, output
    assert "mismatch" in output and "2 differences (mismatch 2)" in output
