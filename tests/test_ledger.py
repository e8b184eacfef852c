"""The attribution ledger: exact splits, refunds before and after recognition, exactly once."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from services import money
from services.errors import NotFound
from services.ledger import flag_rules
from services.ledger import service as ledger
from services.ledger.models import EntryKind, LedgerEntry, Recognition
from services.orders.models import OrderLine
from services.users.models import Role
from tests.ledger_helpers import delivered_cod_order, recognise, supplied_product
from tests.orders_helpers import key

# --- the arithmetic, over random lines and refund sequences --------------------------------------

households = st.lists(st.uuids(), min_size=0, max_size=5, unique=True)


@st.composite
def lines(draw: st.DrawFn) -> tuple[int, int, list[tuple[uuid.UUID, int]]]:
    price = draw(st.integers(1, 500_000))
    quantity = draw(st.integers(1, 50))
    gross = price * quantity
    fee = money.fee(gross, draw(st.integers(0, 3_000)))
    ids = draw(households)
    cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=len(ids), max_size=len(ids))))
    # Share sets total at most 10,000 basis points; the cooperative keeps the rest.
    bps = [b - a for a, b in zip([0, *cuts], cuts, strict=False)]
    return gross, fee, list(zip(ids, bps, strict=True))


@st.composite
def tied_lines(draw: st.DrawFn) -> tuple[int, int, list[tuple[uuid.UUID, int]]]:
    """Small amounts over equal shares: remainders tie, and the tie-break decides."""
    ids = draw(st.lists(st.uuids(), min_size=1, max_size=4, unique=True))
    bp = draw(st.sampled_from([1_000, 2_000, 2_500, 3_333, 5_000]))
    bp = min(bp, 10_000 // len(ids))
    gross = draw(st.integers(1, 30))
    return gross, 0, [(h, bp) for h in ids]


@st.composite
def refund_sequences(draw: st.DrawFn, gross: int) -> list[int]:
    """Partial refunds whose total never exceeds the gross, as the payments area allows."""
    left, out = gross, []
    for _ in range(draw(st.integers(0, 6))):
        if left == 0:
            break
        amount = draw(st.integers(1, left))
        out.append(amount)
        left -= amount
    return out


@given(lines())
def test_a_split_adds_up_to_the_net_and_gives_nobody_less_than_nothing(line) -> None:
    gross, fee, shares = line
    net = ledger.net_after(gross, fee, 0)
    parts = ledger.split(net, shares)
    assert sum(parts.values()) == net == gross - fee
    assert all(amount > 0 for amount in parts.values())
    # Each household's part is its exact share, rounded down or up by less than a fen.
    for household_id, bp in shares:
        assert abs(parts.get(household_id, 0) - net * bp / 10_000) < 1


@given(lines(), st.randoms(use_true_random=False))
def test_the_split_does_not_depend_on_the_order_of_the_shares(line, rnd) -> None:
    gross, fee, shares = line
    shuffled = list(shares)
    rnd.shuffle(shuffled)
    net = ledger.net_after(gross, fee, 0)
    assert ledger.split(net, shares) == ledger.split(net, shuffled)


@settings(max_examples=300)
@given(st.data())
def test_any_refund_sequence_keeps_every_sum_exact_whenever_recognition_comes(data) -> None:
    """Simulates the ledger as the service writes it: recognition writes the target of the
    line at that moment, each later refund writes `adjustments(target, holdings)`."""
    gross, fee, shares = data.draw(lines())
    refunds = data.draw(refund_sequences(gross))
    recognised_after = data.draw(st.integers(0, len(refunds)))  # refunds before recognition
    held: dict[uuid.UUID | None, int] = defaultdict(int)
    refunded = 0

    def target() -> dict[uuid.UUID | None, int]:
        return ledger.split(ledger.net_after(gross, fee, refunded), shares)

    for i, amount in enumerate([0, *refunds]):
        refunded += amount
        if i == recognised_after:
            for party, part in target().items():
                held[party] += part
        elif i > recognised_after:
            for party, part in ledger.adjustments(target(), dict(held)).items():
                held[party] += part
        if i >= recognised_after:
            # Sums exact, and nobody below zero for the line, at every step.
            assert sum(held.values()) == ledger.net_after(gross, fee, refunded)
            assert all(v >= 0 for v in held.values())
    # Where recognition fell in the sequence changes nothing in the end.
    assert {p: v for p, v in held.items() if v} == target()


# Recognition splits whole batches in SQL (ledger_net, ledger_split); refunds and the audit
# compute the same targets in Python. The two must agree to the fen, or a refund after
# recognition would write a correction nobody asked for.
_SQL_TARGET = text(
    "SELECT p.household_id, p.amount_fen"
    " FROM ledger_split(ledger_net(:gross, :fee, :refunded), CAST(:shares AS jsonb)) AS p"
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@example(line=(1, 0, [(uuid.UUID(int=2), 5_000), (uuid.UUID(int=1), 5_000)]), refunded_share=0)
@example(line=(2, 0, [(uuid.UUID(int=1), 5_000)]), refunded_share=0)
@given(line=lines() | tied_lines(), refunded_share=st.fractions(0, 1))
async def test_the_split_in_sql_is_the_split_in_python(connection, line, refunded_share) -> None:
    gross, fee, shares = line
    refunded = int(gross * refunded_share)
    rows = await connection.execute(
        _SQL_TARGET,
        {
            "gross": gross,
            "fee": fee,
            "refunded": refunded,
            "shares": json.dumps(
                [{"household_id": str(h), "basis_points": bp} for h, bp in shares]
            ),
        },
    )
    in_sql = {party: amount for party, amount in rows if amount}
    in_python = ledger.split(ledger.net_after(gross, fee, refunded), shares)
    assert in_sql == in_python


# Recognition splits a whole batch at once (ledger_split_lines): each line of the batch
# must come out as it would alone, whatever the other lines are.
_SQL_BATCH = text(
    "SELECT s.line_id, s.household_id, s.amount_fen"
    " FROM ledger_split_lines(CAST(:ids AS uuid[]), CAST(:nets AS bigint[]),"
    " CAST(:shares AS jsonb[])) AS s"
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(lines() | tied_lines(), min_size=1, max_size=12))
async def test_a_batch_split_in_sql_is_each_lines_split_in_python(connection, batch) -> None:
    ids = [uuid.uuid4() for _ in batch]
    rows = await connection.execute(
        _SQL_BATCH,
        {
            "ids": ids,
            "nets": [ledger.net_after(gross, fee, 0) for gross, fee, _ in batch],
            "shares": [
                json.dumps([{"household_id": str(h), "basis_points": bp} for h, bp in shares])
                for _, _, shares in batch
            ],
        },
    )
    in_sql: dict[uuid.UUID, dict[uuid.UUID | None, int]] = defaultdict(dict)
    for line_id, party, amount in rows:
        if amount:
            in_sql[line_id][party] = amount
    for line_id, (gross, fee, shares) in zip(ids, batch, strict=True):
        assert in_sql.get(line_id, {}) == ledger.split(ledger.net_after(gross, fee, 0), shares)


def test_a_full_refund_leaves_nothing_to_anyone() -> None:
    assert ledger.net_after(10_000, 500, 10_000) == 0
    assert ledger.net_after(10_000, 500, 5_000) == 4_750


def test_ties_go_to_households_before_the_cooperative() -> None:
    a, b = uuid.UUID(int=1), uuid.UUID(int=2)
    # One fen between two equal halves goes to the household with the smaller id...
    assert ledger.split(1, [(b, 5000), (a, 5000)]) == {a: 1}
    # ...and between a household and the cooperative, to the household.
    assert ledger.split(1, [(b, 5000)]) == {b: 1}
    assert ledger.split(2, [(a, 5000)]) == {a: 1, None: 1}


def test_the_assessment_year_follows_china_time() -> None:
    assert ledger.assessment_year(datetime(2026, 12, 31, 17, 0, tzinfo=UTC)) == 2027
    assert ledger.assessment_year(datetime(2026, 12, 31, 15, 59, tzinfo=UTC)) == 2026


# --- the service on PostgreSQL -------------------------------------------------------------------


async def entries(session, order_id: str) -> list[LedgerEntry]:
    return list(
        (
            await session.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.order_id == uuid.UUID(order_id))
                .order_by(LedgerEntry.id)
            )
        ).all()
    )


def by_party(rows: list[LedgerEntry]) -> dict[uuid.UUID | None, int]:
    out: dict[uuid.UUID | None, int] = defaultdict(int)
    for row in rows:
        out[row.household_id] += row.amount_fen
    return {k: v for k, v in out.items() if v}


async def refund(
    client, users, order: dict[str, Any], manager_coop: str, **body: Any
) -> dict[str, Any]:
    manager = await users.make(Role.manager, cooperative_id=uuid.UUID(manager_coop))
    response = await client.post(
        f"/v1/orders/{order['id']}/refunds",
        json={"reason": "damaged in transit", **body},
        headers={**users.auth(manager), **key()},
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_delivered_order_then_a_partial_refund_gives_exactly_the_expected_entries(
    client, users, world, session
) -> None:
    coop = await world.cooperative()
    a, b = await world.household(), await world.household()
    product = await supplied_product(world, coop, [(a, 6000), (b, 2500)], price_fen=3333)
    order = await delivered_cod_order(client, users, [(product, 3)])
    assert order["status"] == "delivered" and order["payment_status"] == "paid"
    assert await recognise(session, order) == 1
    # 9,999 gross, 499 fee (5 %, rounded down): 9,500 net = 5,700 + 2,375 + 1,425.
    first = await entries(session, order["id"])
    assert {(e.household_id, e.amount_fen, e.kind) for e in first} == {
        (a.id, 5_700, EntryKind.recognition),
        (b.id, 2_375, EntryKind.recognition),
        (None, 1_425, EntryKind.recognition),
    }
    # One unit of three comes back (3,333 fen): 6,666 kept, 332 fee kept
    # (499 x 6,666 / 9,999, rounded down), 6,334 net = 3,800.4 + 1,583.5 + 950.1.
    line_id = order["fulfilments"][0]["lines"][0]["id"]
    await refund(client, users, order, str(coop.id), lines=[{"line_id": line_id, "quantity": 1}])
    after = await entries(session, order["id"])
    adjustments = [e for e in after if e.kind is EntryKind.adjustment]
    assert {(e.household_id, e.amount_fen) for e in adjustments} == {
        (a.id, -1_900),
        (b.id, -791),
        (None, -475),
    }
    assert all(e.refund_id is not None for e in adjustments)
    assert by_party(after) == {a.id: 3_800, b.id: 1_584, None: 950}
    assert sum(by_party(after).values()) == 6_334


async def test_a_refund_before_recognition_reduces_what_is_recognised(
    client, users, world, session
) -> None:
    coop = await world.cooperative()
    a = await world.household()
    product = await supplied_product(world, coop, [(a, 10_000)], price_fen=1_000)
    order = await delivered_cod_order(client, users, [(product, 4)])
    await refund(client, users, order, str(coop.id), amount_fen=1_000)
    assert await recognise(session, order) == 1
    rows = await entries(session, order["id"])
    assert [(e.household_id, e.amount_fen, e.kind) for e in rows] == [
        (a.id, 2_850, EntryKind.recognition)  # 3,000 kept - 150 fee
    ]


async def test_recognition_waits_for_the_cash_and_happens_once(client, users, world, session):
    coop = await world.cooperative()
    a = await world.household()
    product = await supplied_product(world, coop, [(a, 5_000)])
    order = await delivered_cod_order(client, users, [(product, 1)], cash=False)
    assert order["status"] == "delivered" and order["payment_status"] == "unpaid"
    assert await recognise(session, order) == 0  # delivered, not paid: nothing earned yet
    assert await session.scalar(select(func.count()).select_from(Recognition)) == 0
    line = await session.get(OrderLine, uuid.UUID(order["fulfilments"][0]["lines"][0]["id"]))
    assert line is not None


async def test_the_backlog_sweep_recognises_each_fulfilment_once(client, users, world, session):
    coop = await world.cooperative()
    a = await world.household()
    product = await supplied_product(world, coop, [(a, 7_000)])
    orders = [await delivered_cod_order(client, users, [(product, 1)]) for _ in range(3)]
    now = datetime.now(UTC)
    assert await ledger.recognise_due(session, now=now) == 3
    assert await ledger.recognise_due(session, now=now) == 0
    for order in orders:
        assert await recognise(session, order) == 0
        assert sum(e.amount_fen for e in await entries(session, order["id"])) == 2_375


async def test_a_deliverys_job_takes_the_other_due_fulfilments_along(client, users, world, session):
    coop = await world.cooperative()
    a = await world.household()
    product = await supplied_product(world, coop, [(a, 7_000)])
    orders = [await delivered_cod_order(client, users, [(product, 1)]) for _ in range(4)]
    fulfilments = [uuid.UUID(o["fulfilments"][0]["id"]) for o in orders]
    now = datetime.now(UTC)
    # At most `sweep` others: the first job takes two of the three others along.
    assert await ledger.recognise_delivered(session, fulfilments[1], now=now, sweep=2) == 3
    assert await session.scalar(select(func.count()).select_from(Recognition)) == 3
    left = set(fulfilments) - set(await session.scalars(select(Recognition.fulfilment_id)))
    assert len(left) == 1 and fulfilments[1] not in left
    # The jobs of those it took find them recognised; the one left is its own job's.
    done = {f: await ledger.recognise_delivered(session, f, now=now) for f in fulfilments}
    assert done == {f: 1 if f in left else 0 for f in fulfilments}
    assert await ledger.recognise_due(session, now=now) == 0
    for order in orders:
        assert sum(e.amount_fen for e in await entries(session, order["id"])) == 2_375
    with pytest.raises(NotFound):
        await ledger.recognise_delivered(session, uuid.uuid4(), now=now)


async def test_the_job_of_an_unpaid_delivery_sweeps_nothing(client, users, world, session):
    coop = await world.cooperative()
    product = await supplied_product(world, coop, [(await world.household(), 7_000)])
    due = [await delivered_cod_order(client, users, [(product, 1)]) for _ in range(2)]
    unpaid = await delivered_cod_order(client, users, [(product, 1)], cash=False)
    now = datetime.now(UTC)
    # Its cash is not collected: nothing of its own to recognise, and no sweep for others.
    job = uuid.UUID(unpaid["fulfilments"][0]["id"])
    assert await ledger.recognise_delivered(session, job, now=now) == 0
    assert await session.scalar(select(func.count()).select_from(Recognition)) == 0
    # The due ones are their own jobs' (or the backlog's).
    assert await ledger.recognise_due(session, now=now) == len(due)


async def test_the_sweep_takes_the_latest_deliveries_and_reads_no_further(
    client, users, world, session
):
    coop = await world.cooperative()
    product = await supplied_product(world, coop, [(await world.household(), 7_000)])

    async def delivered(*, cash: bool = True) -> uuid.UUID:
        order = await delivered_cod_order(client, users, [(product, 1)], cash=cash)
        return uuid.UUID(order["fulfilments"][0]["id"])

    def recognised() -> Any:
        return session.scalars(select(Recognition.fulfilment_id))

    old = await delivered()
    # Then as many deliveries whose cash is not collected as a sweep of one looks at.
    for _ in range(ledger.SWEEP_LOOKS_AT):
        await delivered(cash=False)
    mine = await delivered()
    now = datetime.now(UTC)
    # The latest deliveries besides its own are all unpaid: the older due one is not read.
    assert await ledger.recognise_delivered(session, mine, now=now, sweep=1) == 1
    assert set(await recognised()) == {mine}
    # Two more: the sweep takes the latest due delivery, not the oldest.
    later, last = await delivered(), await delivered()
    assert await ledger.recognise_delivered(session, last, now=now, sweep=1) == 2
    assert set(await recognised()) == {mine, later, last}
    # The old one is its own job's, or the backlog's.
    assert await ledger.recognise_due(session, now=now) == 1
    assert old in set(await recognised())


async def test_a_fulfilment_that_fails_in_the_sweep_does_not_hold_up_the_delivery(
    client, users, world, session
):
    coop = await world.cooperative()
    product = await supplied_product(world, coop, [(await world.household(), 7_000)])
    mine, poisoned = [await delivered_cod_order(client, users, [(product, 1)]) for _ in range(2)]
    bad = uuid.UUID(poisoned["fulfilments"][0]["id"])

    async def failing(session_, recognised, now) -> None:
        if any(line.fulfilment_id == bad for line in recognised):
            raise RuntimeError("this fulfilment cannot be recognised")

    ledger.on_recognised_unlocked(failing)
    try:
        now = datetime.now(UTC)
        assert (
            await ledger.recognise_delivered(
                session, uuid.UUID(mine["fulfilments"][0]["id"]), now=now
            )
            == 1
        )
        # Its own job fails (and its transaction, here a savepoint, rolls back).
        with pytest.raises(RuntimeError):
            async with session.begin_nested():
                await ledger.recognise_delivered(session, bad, now=now)
    finally:
        ledger._unlocked_followers.remove(failing)
    assert [f async for f in await session.stream_scalars(select(Recognition.fulfilment_id))] == [
        uuid.UUID(mine["fulfilments"][0]["id"])
    ]
    assert sum(e.amount_fen for e in await entries(session, mine["id"])) == 2_375
    assert await entries(session, poisoned["id"]) == []
    assert await ledger.recognise_delivered(session, bad, now=now) == 1


async def test_purchases_are_reviewed_before_the_households_are_locked(
    client, users, world, session
) -> None:
    """A backlog batch locks nearly every household bucket until it commits, and a second
    batch waits for them: the self-dealing rules need no lock, so they run before."""
    coop = await world.cooperative()
    product = await supplied_product(world, coop, [(await world.household(), 5_000)])
    order = await delivered_cod_order(client, users, [(product, 1)])
    held: dict[str, int] = {}

    def probe(name: str) -> ledger.Follower:
        async def follower(session_, recognised, now) -> None:
            held[name] = await session_.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid()"
                )
            )

        return follower

    before, after = probe("before"), probe("after")
    ledger.on_recognised_unlocked(before)
    ledger.on_recognised(after)
    try:
        assert await recognise(session, order) == 1
    finally:
        ledger._unlocked_followers.remove(before)
        ledger._followers.remove(after)
    assert held == {"before": 0, "after": 1}
    assert flag_rules.review_purchases in ledger._unlocked_followers
    assert flag_rules.review_anomalies in ledger._followers


async def test_the_ledger_refuses_updates_and_deletes(client, users, world, session) -> None:
    coop = await world.cooperative()
    product = await supplied_product(world, coop, [])
    order = await delivered_cod_order(client, users, [(product, 1)])
    await recognise(session, order)
    for statement in (
        "UPDATE ledger_entries SET amount_fen = amount_fen + 1",
        "DELETE FROM ledger_entries",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with session.begin_nested():
                await session.execute(text(statement))
    assert sum(e.amount_fen for e in await entries(session, order["id"])) == 2_375


async def test_entries_carry_the_year_the_buyer_and_the_county(client, users, world, session):
    coop = await world.cooperative()
    a = await world.household()
    product = await supplied_product(world, coop, [(a, 5_000)])
    order = await delivered_cod_order(client, users, [(product, 2)])
    await recognise(session, order)
    rows = await entries(session, order["id"])
    assert {e.buyer_id for e in rows} == {order["buyer"].id}
    assert {e.county_code for e in rows} == {world.county.county}
    assert {e.year for e in rows} == {ledger.assessment_year(datetime.now(UTC))}
