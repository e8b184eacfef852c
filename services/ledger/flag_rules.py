"""The four flag rules, run after every recognition in its transaction.

Two followers of the recognition take all the lines recognised in one transaction
(one fulfilment, or a backlog batch) and run the rules with a few set-based queries.
What a flag holds back and how officers rule on it is in `flags.py`.

The self-dealing rules judge each purchase once, for good. The anomaly rules judge a
household's year so far, which changes with every recognition: each time, they
withdraw their open flags whose condition no longer holds and open again those
whose condition came back, so that what assessment counts depends on the lines
recognised, not on the order or the batches they came in.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services import phones
from services.db import driver_connection
from services.households.models import Household
from services.ledger import service as ledger
from services.ledger.flags import FlagPolicy, among, current_policy
from services.ledger.models import (
    AttributionFlag,
    EntryKind,
    FlagLine,
    FlagRule,
    FlagStatus,
    LedgerEntry,
)
from services.ledger.service import CHINA, RecognisedLine

Pair = tuple[uuid.UUID, uuid.UUID]  # (line_id, household_id)


# --- the rules ------------------------------------------------------------------------------


# Two followers of every recognition flag what its lines reveal; only households' parts
# can be held back.
@ledger.on_recognised_unlocked
async def review_purchases(
    session: AsyncSession, recognised: list[RecognisedLine], now: datetime
) -> None:
    """Who bought (rules supplier_household and cooperative_insider).

    Each purchase is judged on its own, against the file cards and the cooperatives'
    insiders; no running total is read, so this runs before the households' locks.
    """
    if supplied := [r for r in recognised if r.households]:
        await _write(session, await _self_dealing(session, supplied))


@ledger.on_recognised
async def review_anomalies(
    session: AsyncSession, recognised: list[RecognisedLine], now: datetime
) -> None:
    """How much came in (rules dominant_buyer and pre_assessment_spike)."""
    supplied = [r for r in recognised if r.households]
    if not supplied:
        return
    policy = current_policy()
    # These rules need their households serialised: the recognition holds those locks
    # already, taken when it added the lines to the running totals (totals.add).
    touched = {(h, r.year) for r in supplied for h in r.households}
    created = await _judge_dominant(session, touched, policy, now)
    # A flag raised now holds every line of its buyer that year; one raised before takes
    # the lines its buyer brings later, whatever its status: withdrawn, it holds nothing
    # back, and opened again it holds back all of them.
    await _cover_later(
        session,
        FlagRule.dominant_buyer,
        [(r.line_id, h, r.buyer_id, r.year) for r in supplied for h in r.households],
        created,
    )
    # Spikes are judged where income came into the window (one may start or come back
    # there) and where a spike flag is open (income before the window, come in late, may
    # end it).
    windows = {year: policy.window(year) for year in {r.year for r in supplied}}
    late = [r for r in supplied if windows[r.year][0] <= r.effective_at < windows[r.year][1]]
    flagged = await _open_spikes(session, touched)
    created = await _judge_spikes(
        session, {(h, r.year) for r in late for h in r.households} | flagged, flagged, policy, now
    )
    await _cover_later(
        session,
        FlagRule.pre_assessment_spike,
        [(r.line_id, h, None, r.year) for r in late for h in r.households],
        created,
    )


@ledger.on_adjusted
async def review_adjusted(
    session: AsyncSession, changed: set[tuple[uuid.UUID, int]], now: datetime
) -> None:
    """A refund changed households' years after recognition: judge them again (the resync
    holds the households' locks since it added to their totals)."""
    policy = current_policy()
    await _judge_dominant(session, changed, policy, now)
    # Less income before the window may make a spike of the window's, so every year.
    await _judge_spikes(session, changed, await _open_spikes(session, changed), policy, now)


@dataclass
class _Draft:
    rule: FlagRule
    key: str
    county_code: str
    year: int
    detail: dict[str, Any]
    order_id: uuid.UUID | None = None
    buyer_id: uuid.UUID | None = None
    household_id: uuid.UUID | None = None
    cooperative_id: uuid.UUID | None = None
    covers: set[Pair] = field(default_factory=set)


# Pure functions of a string, memoised: every batch meets the same households, managers and
# buyers' addresses again, and NFKC with a Unicode regex costs more than the rest of a rule.
@functools.lru_cache(maxsize=1 << 16)
def norm_phone(phone: str | None) -> str | None:
    """The last 11 digits (a mainland mobile without +86); None when too short to compare."""
    numbers = phones.digits(phone)
    return numbers[-11:] if len(numbers) >= 7 else None


@functools.lru_cache(maxsize=1 << 16)
def norm_text(value: str | None) -> str:
    """Without whitespace and punctuation, full-width folded: how addresses and names compare."""
    folded = unicodedata.normalize("NFKC", value or "").casefold()
    return re.sub(r"[\W_]+", "", folded)


def _mask(phone: str) -> str:
    return "*" * (len(phone) - 4) + phone[-4:]


@dataclass(frozen=True)
class _Contact:
    """How a purchase reaches its buyer: the account's phone and the delivery address."""

    phones: tuple[tuple[str, str], ...]  # (via, normalised phone)
    recipient: str
    region_code: str | None
    addresses: frozenset[str]  # normalised, from the street alone up to the province
    full_address: str

    @functools.cached_property
    def sorted_addresses(self) -> tuple[str, ...]:
        return tuple(sorted(self.addresses))

    def phone_hits(self, mine: str | None, matched: str) -> list[dict[str, str]]:
        """Where the purchase reaches a normalised phone (`norm_phone`) of a suspect."""
        if mine is None:
            return []
        return [
            {"matched": matched, "via": via, "phone": _mask(mine)}
            for via, theirs in self.phones
            if theirs == mine
        ]

    def address_hit(self, mine: str, matched: str) -> list[dict[str, str]]:
        """Whether the delivery address is a normalised address (`norm_text`) of a suspect."""
        return [{"matched": matched, "via": "delivery_address"}] if mine in self.addresses else []


_ADDRESS_KEYS = ("phone", "province", "city", "county", "street", "recipient", "region_code")
# Each order's buyer phone and the fields of its delivery address the rules compare, as text.
# (In the order of _ADDRESS_KEYS.)
_CONTACTS = """
SELECT o.id, u.phone,
       o.delivery_address ->> 'phone', o.delivery_address ->> 'province',
       o.delivery_address ->> 'city', o.delivery_address ->> 'county',
       o.delivery_address ->> 'street', o.delivery_address ->> 'recipient',
       o.delivery_address ->> 'region_code'
FROM orders o JOIN users u ON u.id = o.buyer_id
WHERE o.id = ANY($1)
"""


# Buyers order to the same few addresses again and again: one contact per distinct form.
@functools.lru_cache(maxsize=1 << 14)
def _contact_of(account_phone: str | None, values: tuple[str | None, ...]) -> _Contact:
    address = dict(zip(_ADDRESS_KEYS, values, strict=True))
    phones = [("buyer_account", norm_phone(account_phone))]
    phones.append(("delivery_address", norm_phone(address.get("phone"))))
    parts = [str(address.get(k) or "") for k in ("province", "city", "county", "street")]
    forms = {norm_text("".join(parts[i:])) for i in range(len(parts))} - {""}
    return _Contact(
        phones=tuple((via, p) for via, p in phones if p is not None),
        recipient=norm_text(address.get("recipient")),
        region_code=address.get("region_code") or None,
        addresses=frozenset(forms),
        full_address=norm_text("".join(parts)),
    )


async def _fetch(session: AsyncSession, sql: str, *args: Any) -> list[Any]:
    """Rows straight from asyncpg on the session's connection (same transaction).

    A backlog batch reads tens of thousands of rows here; going around SQLAlchemy's
    result processing (a uuid.UUID built from text for every id) halves the rules' cost.
    """
    return list(await (await driver_connection(session)).fetch(sql, *args))


def _ids(values: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    return list(set(values))


@dataclass(frozen=True, slots=True)
class _Home:
    """A supplying household as the rules compare it: everything normalised once a batch."""

    county_code: str
    village_code: str
    phone: str | None  # norm_phone
    address: str  # norm_text
    names: frozenset[str]  # its members' names, norm_text
    village: str  # its village's name, norm_text


_HOMES = """
SELECT h.id, h.county_code, h.village_code, h.phone, h.address, r.name AS village,
       (SELECT array_agg(m.name ORDER BY m.name) FROM household_members m
        WHERE m.household_id = h.id) AS names
FROM households h LEFT JOIN regions r ON r.code = h.village_code
WHERE h.id = ANY($1)
"""


async def _homes(session: AsyncSession, suppliers: set[uuid.UUID]) -> dict[uuid.UUID, _Home]:
    return {
        row[0]: _home_of(*row[1:6], tuple(row[6] or ()))
        for row in await _fetch(session, _HOMES, _ids(suppliers))
    }


# The same households come back batch after batch: one _Home per distinct form.
@functools.lru_cache(maxsize=1 << 16)
def _home_of(
    county_code: str,
    village_code: str,
    phone: str | None,
    address: str | None,
    village: str | None,
    names: tuple[str, ...],
) -> _Home:
    return _Home(
        county_code,
        village_code,
        norm_phone(phone),
        norm_text(address),
        frozenset(norm_text(name) for name in names),
        norm_text(village),
    )


async def _self_dealing(session: AsyncSession, lines: list[RecognisedLine]) -> list[_Draft]:
    """Rules supplier_household and cooperative_insider, for every line of the batch."""
    contacts = {
        row[0]: _contact_of(row[1], tuple(row[2:]))
        for row in await _fetch(session, _CONTACTS, _ids(r.order_id for r in lines))
    }
    homes = await _homes(session, {h for r in lines for h in r.households})
    insiders = await _insiders(session, {r.cooperative_id for r in lines})
    drafts: dict[str, _Draft] = {}
    for line in lines:
        contact = contacts[line.order_id]
        covers = {(line.line_id, h) for h in line.households}
        for household_id in line.households:
            home = homes[household_id]
            hits = contact.phone_hits(home.phone, "phone") + contact.address_hit(
                home.address, "address"
            )
            in_village = (
                contact.region_code == home.village_code
                if contact.region_code
                else bool(home.village) and home.village in contact.full_address
            )
            if contact.recipient and contact.recipient in home.names and in_village:
                hits.append({"matched": "member_name", "via": "delivery_address"})
            if hits:
                key = f"{FlagRule.supplier_household}:{line.fulfilment_id}:{household_id}"
                draft = drafts.setdefault(
                    key,
                    _Draft(
                        FlagRule.supplier_household,
                        key,
                        home.county_code,
                        line.year,
                        {"matched": hits[0]["matched"], "matches": hits},
                        order_id=line.order_id,
                        buyer_id=line.buyer_id,
                        household_id=household_id,
                        cooperative_id=line.cooperative_id,
                    ),
                )
                draft.covers |= covers
        hits, member = insiders.match(contact, line)
        if hits:
            key = f"{FlagRule.cooperative_insider}:{line.fulfilment_id}"
            draft = drafts.setdefault(
                key,
                _Draft(
                    FlagRule.cooperative_insider,
                    key,
                    line.county_code,
                    line.year,
                    {"matched": hits[0]["matched"], "matches": hits},
                    order_id=line.order_id,
                    buyer_id=line.buyer_id,
                    household_id=member,
                    cooperative_id=line.cooperative_id,
                ),
            )
            draft.covers |= covers
    return list(drafts.values())


@dataclass(frozen=True, slots=True)
class _Insider:
    matched: str  # manager_phone, contact_phone, member_phone or member_address
    household_id: uuid.UUID | None = None  # for a member household
    left_on: date | None = None

    def current(self, suppliers: set[uuid.UUID], sold_on: date) -> bool:
        # A supplier's own purchase is supplier_household's; a household that had left is out.
        if self.household_id is None:
            return True
        return self.household_id not in suppliers and (
            self.left_on is None or self.left_on >= sold_on
        )


@dataclass
class _Insiders:
    """Who is inside each selling cooperative, by (cooperative, normalised phone or address)."""

    by_phone: dict[tuple[uuid.UUID, str], list[_Insider]] = field(
        default_factory=lambda: defaultdict(list)
    )
    by_address: dict[tuple[uuid.UUID, str], list[_Insider]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def match(
        self, contact: _Contact, line: RecognisedLine
    ) -> tuple[list[dict[str, str]], uuid.UUID | None]:
        """What of the purchase matches an insider, and the first member household matched."""
        found = [
            (who, via, phone)
            for via, phone in contact.phones
            for who in self.by_phone.get((line.cooperative_id, phone), ())
        ] + [
            (who, "delivery_address", None)
            for form in contact.sorted_addresses
            for who in self.by_address.get((line.cooperative_id, form), ())
            if who.household_id
        ]
        if not found:  # the honest purchase, nearly always: nothing more to work out
            return [], None
        sold_on = line.effective_at.astimezone(CHINA).date()
        suppliers = set(line.households)
        hits: list[dict[str, str]] = []
        members: list[uuid.UUID] = []
        for who, via, phone in found:
            if not who.current(suppliers, sold_on):
                continue
            hit = {"matched": who.matched, "via": via}
            hits.append(hit | {"phone": _mask(phone)} if phone else hit)
            members += [who.household_id] if who.household_id else []
        return hits, (members[0] if members else None)


# Every batch of a backlog reads the same members again: one _Insider each, made once.
_member = functools.lru_cache(maxsize=1 << 17)(_Insider)

_MANAGER_PHONES = """
SELECT cooperative_id, phone FROM users
WHERE role = 'manager' AND cooperative_id = ANY($1) AND phone IS NOT NULL
ORDER BY cooperative_id, id
"""
_CONTACT_PHONES = """
SELECT id, contact_phone FROM cooperatives WHERE id = ANY($1) AND contact_phone IS NOT NULL
"""
_MEMBERS = """
SELECT m.cooperative_id, m.household_id, m.left_on, h.phone, h.address
FROM cooperative_members m JOIN households h ON h.id = m.household_id
WHERE m.cooperative_id = ANY($1) AND (h.phone IS NOT NULL OR h.address IS NOT NULL)
ORDER BY m.cooperative_id, m.household_id
"""


async def _insiders(session: AsyncSession, cooperatives: set[uuid.UUID]) -> _Insiders:
    """Managers' phones, contact phones and member households of the selling cooperatives."""
    out = _Insiders()
    ids = _ids(cooperatives)

    def by_phone(cooperative_id: uuid.UUID, phone: str | None, who: _Insider) -> None:
        if (normal := norm_phone(phone)) is not None:
            out.by_phone[(cooperative_id, normal)].append(who)

    manager = _Insider("manager_phone")
    for cooperative_id, phone in await _fetch(session, _MANAGER_PHONES, ids):
        by_phone(cooperative_id, phone, manager)
    contact = _Insider("contact_phone")
    for cooperative_id, phone in await _fetch(session, _CONTACT_PHONES, ids):
        by_phone(cooperative_id, phone, contact)
    for cooperative_id, household_id, left_on, phone, address in await _fetch(
        session, _MEMBERS, ids
    ):
        by_phone(cooperative_id, phone, _member("member_phone", household_id, left_on))
        if normal := norm_text(address):
            out.by_address[(cooperative_id, normal)].append(
                _member("member_address", household_id, left_on)
            )
    return out


async def _judge_dominant(
    session: AsyncSession,
    years: set[tuple[uuid.UUID, int]],
    policy: FlagPolicy,
    now: datetime,
) -> set[uuid.UUID]:
    """One buyer gives more than the share of a household's year (once the year is large).

    Reads the running totals (`services.ledger.totals`): per (household, year) given, one
    row and the few buyers above the share, whatever the size of the ledger. Every buyer
    of those years is judged, not only the buyers of the lines at hand: another buyer's
    purchase lowers a share, or lifts the year over the minimum. Flags are raised, opened
    again or withdrawn accordingly; answers the flags raised now.
    """
    # (No order needed: the statement sorts its answer; UUIDs compare slowly in Python.)
    touched = list(years)
    rows = await _fetch(
        session,
        _DOMINANT,
        [h for h, _ in touched],
        [y for _, y in touched],
        policy.dominant_buyer_min_fen,
        policy.dominant_buyer_bp,
    )
    drafts = [
        _Draft(
            FlagRule.dominant_buyer,
            _dominant_key(row["household_id"], row["buyer_id"], row["year"]),
            row["county_code"],
            row["year"],
            {
                "buyer_fen": row["part"],
                "household_year_fen": row["total"],
                "share_bp": row["part"] * 10_000 // row["total"],
                "threshold_bp": policy.dominant_buyer_bp,
                "min_fen": policy.dominant_buyer_min_fen,
            },
            buyer_id=row["buyer_id"],
            household_id=row["household_id"],
        )
        for row in rows
    ]
    ids, created = await _write(session, drafts)
    await _cover_history(session, created, LedgerEntry.buyer_id == AttributionFlag.buyer_id)
    await _reopen(session, drafts, ids, created, now)
    await _fetch(
        session,
        _WITHDRAW_DOMINANT,
        [h for h, _ in touched],
        [y for _, y in touched],
        policy.dominant_buyer_min_fen,
        policy.dominant_buyer_bp,
        now,
    )
    return created


# The bound in the lateral query is the share rounded down, as bigint, so that the index on
# (household_id, year, amount_fen) ranges over the buyers above it; the outer condition is
# the exact one, in integers. OFFSET 0 keeps the lateral query whole: pulled up into the
# join, the generic plan that a prepared statement settles on after a few runs probed the
# index by household alone and filtered all of its buyers, hundreds of thousands of rows a
# batch once the year is well under way.
_DOMINANT = """
SELECT t.household_id, t.year, t.amount_fen AS total, h.county_code, b.buyer_id,
       b.amount_fen AS part
FROM unnest($1::uuid[], $2::smallint[]) AS k(household_id, year)
JOIN ledger_household_years t ON t.household_id = k.household_id AND t.year = k.year
JOIN households h ON h.id = t.household_id
JOIN LATERAL (
    SELECT b.buyer_id, b.amount_fen FROM ledger_buyer_years b
    WHERE b.household_id = t.household_id AND b.year = t.year
      AND b.amount_fen > floor(t.amount_fen::numeric * $4 / 10000)::bigint
    OFFSET 0
) b ON true
WHERE t.amount_fen >= $3 AND b.amount_fen * 10000 > t.amount_fen * $4
ORDER BY t.household_id, t.year, b.buyer_id
"""


# The open flags of the touched households whose buyer no longer passes the rule (the same
# integer comparison as _DOMINANT), withdrawn with the figures that withdrew them.
_WITHDRAW_DOMINANT = """
WITH judged AS (
    SELECT f.id, t.amount_fen AS total, coalesce(b.amount_fen, 0) AS part
    FROM unnest($1::uuid[], $2::smallint[]) AS k(household_id, year)
    JOIN attribution_flags f ON f.household_id = k.household_id AND f.year = k.year
    JOIN ledger_household_years t ON t.household_id = k.household_id AND t.year = k.year
    LEFT JOIN ledger_buyer_years b
           ON b.household_id = k.household_id AND b.year = k.year AND b.buyer_id = f.buyer_id
    WHERE f.rule = 'dominant_buyer' AND f.status = 'open'
),
gone AS (
    UPDATE attribution_flags f
       SET status = 'withdrawn', ruled_by = NULL, ruled_at = $5, updated_at = $5,
           ruling_reason = format(
               'Withdrawn by the rule: the buyer now gives %s of the household''s %s fen this '
               'year (%s basis points); it flags more than %s once the year reaches %s fen.',
               j.part, j.total, j.part * 10000 / greatest(j.total, 1), $4::int, $3::bigint)
      FROM judged j
     WHERE f.id = j.id AND f.status = 'open'
       AND NOT (j.total >= $3::bigint AND j.part * 10000 > j.total * $4::int)
    RETURNING f.id, f.ruling_reason
)
INSERT INTO attribution_rulings (flag_id, ruling, reason, officer_id, at)
SELECT id, 'withdrawn', ruling_reason, NULL, $5 FROM gone ORDER BY id
"""


def _dominant_key(household_id: uuid.UUID, buyer_id: uuid.UUID, year: int) -> str:
    return f"{FlagRule.dominant_buyer}:{household_id}:{buyer_id}:{year}"


def _spike_key(household_id: uuid.UUID, year: int) -> str:
    return f"{FlagRule.pre_assessment_spike}:{household_id}:{year}"


async def _open_spikes(
    session: AsyncSession, years: set[tuple[uuid.UUID, int]]
) -> set[tuple[uuid.UUID, int]]:
    """Which of these (household, year) have an open spike flag."""
    if not years:
        return set()
    return {
        (row["household_id"], row["year"])
        for row in await _fetch(
            session,
            "SELECT household_id, year FROM attribution_flags"
            " WHERE rule = $1 AND status = 'open'"
            " AND household_id = ANY($2) AND year = ANY($3::smallint[])",
            FlagRule.pre_assessment_spike.value,
            _ids(h for h, _ in years),
            list({y for _, y in years}),
        )
    } & years


async def _judge_spikes(
    session: AsyncSession,
    touched: set[tuple[uuid.UUID, int]],
    flagged: set[tuple[uuid.UUID, int]],
    policy: FlagPolicy,
    now: datetime,
) -> set[uuid.UUID]:
    """A household's income in the weeks before the assessment date jumps against its year.

    Judges the (household, year) `touched`; `flagged` are those of them with an open spike
    flag, which is withdrawn if the jump is gone. Answers the flags raised now.
    """
    if not touched:
        return set()
    years = {y for _, y in touched}
    windows = {year: policy.window(year) for year in years}
    e = LedgerEntry
    inside = _in_windows({y: windows[y] for y in years})
    before = or_(*(and_(e.year == y, e.effective_at < windows[y][0]) for y in years))
    rows = (
        await session.execute(
            select(
                e.household_id,
                e.year,
                Household.county_code,
                func.coalesce(func.sum(e.amount_fen).filter(inside), 0).label("window"),
                func.coalesce(func.sum(e.amount_fen).filter(before), 0).label("earlier"),
            )
            .join(Household, Household.id == e.household_id)
            .where(among(e.household_id, {h for h, _ in touched}), among(e.year, years))
            .group_by(e.household_id, e.year, Household.county_code)
        )
    ).all()
    drafts: list[_Draft] = []
    ended: list[tuple[uuid.UUID, int, str]] = []  # (household, year, why) of open flags
    for row in rows:
        if (row.household_id, row.year) not in touched:
            continue
        start, end = windows[row.year]
        window, earlier = int(row.window), int(row.earlier)
        before_s = (start - datetime(row.year, 1, 1, tzinfo=CHINA)).total_seconds()
        window_s = (end - start).total_seconds()
        # No time before the window: nothing to compare with, so no spike.
        if (
            window < policy.spike_min_fen
            or before_s <= 0
            or window * before_s <= policy.spike_factor * earlier * window_s
        ):
            if (row.household_id, row.year) in flagged:
                average = int(earlier * window_s // before_s) if before_s > 0 else 0
                ended.append(
                    (
                        row.household_id,
                        row.year,
                        f"Withdrawn by the rule: {window} fen in the window against an average"
                        f" window of {average} fen before it; it flags more than"
                        f" {policy.spike_factor:g} times that, from {policy.spike_min_fen} fen.",
                    )
                )
            continue
        drafts.append(
            _Draft(
                FlagRule.pre_assessment_spike,
                _spike_key(row.household_id, row.year),
                row.county_code,
                row.year,
                {
                    "window_fen": window,
                    "average_window_fen": int(earlier * window_s // before_s),
                    "window_start": start.isoformat(),
                    "window_end": end.isoformat(),
                    "factor": policy.spike_factor,
                    "min_fen": policy.spike_min_fen,
                },
                household_id=row.household_id,
            )
        )
    ids, created = await _write(session, drafts)
    await _cover_history(session, created, inside)
    await _reopen(session, drafts, ids, created, now)
    if ended:
        households, of_years, reasons = (list(column) for column in zip(*ended, strict=True))
        await _fetch(session, _WITHDRAW_SPIKES, households, of_years, reasons, now)
    return created


_WITHDRAW_SPIKES = """
WITH gone AS (
    UPDATE attribution_flags f
       SET status = 'withdrawn', ruled_by = NULL, ruled_at = $4, updated_at = $4,
           ruling_reason = k.reason
      FROM unnest($1::uuid[], $2::smallint[], $3::text[]) AS k(household_id, year, reason)
     WHERE f.rule = 'pre_assessment_spike' AND f.status = 'open'
       AND f.household_id = k.household_id AND f.year = k.year
    RETURNING f.id, f.ruling_reason
)
INSERT INTO attribution_rulings (flag_id, ruling, reason, officer_id, at)
SELECT id, 'withdrawn', ruling_reason, NULL, $4 FROM gone ORDER BY id
"""


async def _reopen(
    session: AsyncSession,
    drafts: list[_Draft],
    ids: dict[str, uuid.UUID],
    created: set[uuid.UUID],
    now: datetime,
) -> None:
    """The flags of these drafts that their rule had withdrawn: open again, with the figures
    that opened them. Officers' rulings stand; flags still open stay as they were raised."""
    again = [(ids[d.key], d.detail) for d in drafts if ids[d.key] not in created]
    if again:
        flag_ids, details = (
            list(column) for column in zip(*sorted(again, key=lambda a: a[0]), strict=True)
        )
        await _fetch(session, _REOPEN, flag_ids, [json.dumps(d) for d in details], REOPENED, now)


REOPENED = "Opened again by the rule: its condition holds again."
_REOPEN = """
WITH back AS (
    UPDATE attribution_flags f
       SET status = 'open', detail = CAST(d.detail AS jsonb), ruled_by = NULL,
           ruled_at = $4, ruling_reason = $3, updated_at = $4
      FROM unnest($1::uuid[], $2::text[]) AS d(id, detail)
     WHERE f.id = d.id AND f.status = 'withdrawn'
    RETURNING f.id
)
INSERT INTO attribution_rulings (flag_id, ruling, reason, officer_id, at)
SELECT id, 'open', $3, NULL, $4 FROM back ORDER BY id
"""


def _in_windows(windows: dict[int, tuple[datetime, datetime]]) -> ColumnElement[bool]:
    e = LedgerEntry
    return or_(
        *(
            and_(e.year == year, e.effective_at >= start, e.effective_at < end)
            for year, (start, end) in windows.items()
        )
    )


async def _cover_history(
    session: AsyncSession, created: set[uuid.UUID], matching: ColumnElement[bool]
) -> None:
    """Flags raised now hold their household's lines of their year that match, so far."""
    if not created:
        return
    f, e = AttributionFlag, LedgerEntry
    await session.execute(
        insert(FlagLine)
        .from_select(
            ["flag_id", "line_id", "household_id"],
            select(f.id, e.line_id, e.household_id)
            .distinct()
            .join(e, and_(e.household_id == f.household_id, e.year == f.year, matching))
            .where(among(f.id, created), e.kind == EntryKind.recognition),
        )
        .on_conflict_do_nothing()
    )


async def _cover_later(
    session: AsyncSession,
    rule: FlagRule,
    parts: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID | None, int]],
    created: set[uuid.UUID],
) -> None:
    """Parts of this batch's lines join their flags of `rule` raised by earlier batches.

    `parts` are (line, household, buyer, year): a dominant-buyer flag is its household's,
    buyer's and year's; a spike flag (buyer None) its household's and year's.
    """
    if not parts:
        return
    raised = {
        (household_id, buyer_id, year): flag_id
        for flag_id, household_id, buyer_id, year in await _fetch(
            session,
            "SELECT id, household_id, buyer_id, year FROM attribution_flags"
            " WHERE rule = $1 AND household_id = ANY($2) AND year = ANY($3::smallint[])",
            rule.value,
            _ids(h for _, h, _, _ in parts),
            list({y for _, _, _, y in parts}),
        )
        if flag_id not in created
    }
    if rule is FlagRule.pre_assessment_spike:
        raised = {(h, None, y): flag_id for (h, _, y), flag_id in raised.items()}
    await _cover(
        session,
        sorted(
            (flag_id, line, household)
            for line, household, buyer, year in parts
            if (flag_id := raised.get((household, buyer, year))) is not None
        ),
    )


async def _existing(session: AsyncSession, keys: set[str]) -> dict[str, uuid.UUID]:
    if not keys:
        return {}
    rows = await session.execute(
        select(AttributionFlag.dedupe_key, AttributionFlag.id).where(
            among(AttributionFlag.dedupe_key, keys)
        )
    )
    return dict(rows.all())


async def _write(
    session: AsyncSession, drafts: list[_Draft]
) -> tuple[dict[str, uuid.UUID], set[uuid.UUID]]:
    """Each flag once by its dedupe key (a concurrent twin waits, then finds it), with its lines.

    Keys in ascending order, so that two transactions raising the same flags never deadlock.
    Answers the flags' ids by key, and which of them this call created.
    """
    if not drafts:
        return {}, set()
    drafts = sorted(drafts, key=lambda d: d.key)
    # Rows apart from the statement (executemany, sent as batches of multi-row INSERTs):
    # a backlog batch may raise more flags than one statement's bind parameters can carry.
    written = await session.execute(
        insert(AttributionFlag)
        .on_conflict_do_nothing(index_elements=[AttributionFlag.dedupe_key])
        .returning(AttributionFlag.dedupe_key, AttributionFlag.id),
        [
            {
                "id": uuid.uuid4(),
                "county_code": d.county_code,
                "rule": d.rule,
                "status": FlagStatus.open,
                "dedupe_key": d.key,
                "order_id": d.order_id,
                "buyer_id": d.buyer_id,
                "household_id": d.household_id,
                "cooperative_id": d.cooperative_id,
                "year": d.year,
                "detail": d.detail,
            }
            for d in drafts
        ],
    )
    ids = dict(written.all())
    created = set(ids.values())
    ids |= await _existing(session, {d.key for d in drafts} - set(ids))
    await _cover(session, [(ids[d.key], *pair) for d in drafts for pair in sorted(d.covers)])
    return ids, created


async def _cover(session: AsyncSession, rows: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]) -> None:
    """Hold back these (flag, line, household) parts; those held already stay as they are."""
    if rows:
        flags, lines, households = (list(column) for column in zip(*rows, strict=True))
        await _fetch(session, _COVER, flags, lines, households)


_COVER = """
INSERT INTO attribution_flag_lines (flag_id, line_id, household_id)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[])
ON CONFLICT DO NOTHING
"""
