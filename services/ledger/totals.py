"""Households' ledger income per year, and per buyer and year, kept beside the entries.

The dominant-buyer rule compares what one buyer gave a household in a year with the
whole of that year. Summing entries for it on every recognition read every entry the
touched households ever had, so a backlog's batches slowed down as the ledger grew
(at 1,000,000 lines the rule took more time than the recognition itself). These two
tables hold the sums instead: every statement that appends entries for households
adds them here in its transaction, under the households' locks, and
`marketplace ledger-audit` compares them with the entries.

The locks are advisory, by bucket of households, taken in ascending order, and held
to the end of the transaction: they order the additions here and the flag rules that
read them (`flag_rules.review_anomalies`) between concurrent recognitions and refunds.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import Integer

from services.db import driver_connection

# (household, year, buyer) -> fen
Additions = dict[tuple[uuid.UUID, int, uuid.UUID], int]

# Households are locked by bucket: a backlog batch touches thousands of households, and
# one advisory lock each filled PostgreSQL's shared lock table (max_locks_per_transaction
# x max_connections: 6,400 slots by default) with two batches at once. A bucket stands for
# 1/1,024 of the households; two single deliveries rarely share one.
HOUSEHOLD_LOCK_BUCKETS = 1_024
_HOUSEHOLD_LOCK_SPACE = 0x4C454447  # the advisory lock's first key: "LEDG"


def household_lock_buckets(households: Iterable[uuid.UUID]) -> list[int]:
    return sorted({h.int % HOUSEHOLD_LOCK_BUCKETS for h in households})


async def lock_households(session: AsyncSession, households: Iterable[uuid.UUID]) -> None:
    """Serialise, per household, what reads or adds to its totals until this transaction ends.

    Keys in ascending order: two transactions never wait for each other in a circle.
    Taking a bucket this transaction holds already costs nothing more.
    """
    buckets = household_lock_buckets(households)
    if not buckets:
        return
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:space, k) FROM unnest(:keys) AS k").bindparams(
            bindparam("space", _HOUSEHOLD_LOCK_SPACE),
            bindparam("keys", buckets, type_=ARRAY(Integer())),
        )
    )


def additions(rows: Iterable[tuple[uuid.UUID | None, int, uuid.UUID, int]]) -> Additions:
    """(household or None, year, buyer, fen) of new entries, summed by key; the cooperative's
    parts (no household) and sums of zero left out."""
    out: Additions = defaultdict(int)
    for household_id, year, buyer_id, amount in rows:
        if household_id is not None:
            out[(household_id, year, buyer_id)] += amount
    return {key: amount for key, amount in out.items() if amount}


# Keys sorted, so that the row locks of two transactions come in one order too.
_ADD_BUYER_YEARS = """
INSERT INTO ledger_buyer_years AS t (household_id, year, buyer_id, amount_fen)
SELECT * FROM unnest($1::uuid[], $2::smallint[], $3::uuid[], $4::bigint[])
ORDER BY 1, 2, 3
ON CONFLICT (household_id, year, buyer_id)
DO UPDATE SET amount_fen = t.amount_fen + excluded.amount_fen
"""
_ADD_HOUSEHOLD_YEARS = """
INSERT INTO ledger_household_years AS t (household_id, year, amount_fen)
SELECT household_id, year, sum(amount_fen)
FROM unnest($1::uuid[], $2::smallint[], $3::bigint[]) AS a(household_id, year, amount_fen)
GROUP BY 1, 2
ORDER BY 1, 2
ON CONFLICT (household_id, year)
DO UPDATE SET amount_fen = t.amount_fen + excluded.amount_fen
"""


async def add(session: AsyncSession, added: Additions) -> None:
    """Add new entries' amounts to their households' totals, in the caller's transaction."""
    if not added:
        return
    await lock_households(session, {h for h, _, _ in added})
    # The statements sort the keys themselves (lock order); UUIDs sort slowly in Python.
    households, years, buyers = (list(column) for column in zip(*added, strict=True))
    amounts = list(added.values())
    driver = await driver_connection(session)
    await driver.execute(_ADD_BUYER_YEARS, households, years, buyers, amounts)
    await driver.execute(_ADD_HOUSEHOLD_YEARS, households, years, amounts)
