"""What an export reads: each table's statement, pseudonymous unless names were asked.

The assessment area writes the tables (household-year rows, village and county
indicators) as SQL; an export selects from them, replacing the household id with
its keyed pseudonym and leaving out personal columns unless an officer asked for
names. Everything stays in one statement, so that the CSV export is a pure COPY
and the others read it through a server-side cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Executable,
    Select,
    Text,
    TextClause,
    case,
    cast,
    column,
    func,
    literal,
    select,
    text,
    type_coerce,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.assessment import households, regions
from services.assessment.models import Threshold
from services.assessment.scope import Scope, sql_filter
from services.exports.models import ExportTable
from services.exports.pseudonyms import pseudonym_sql
from services.exports.writers import LIST_SEPARATOR

# The column that stands for `household_id` in pseudonymous exports: named apart, so
# that nobody takes it for an id of the API.
PSEUDONYM_COLUMN = "household_pseudonym"
_HOUSEHOLDS = "SELECT count(*) FROM households h WHERE {scope}"


# A spreadsheet opening a CSV takes a cell starting with one of these for a formula
# (OWASP "CSV injection"); `-` and `+` too, since `-1+2` or `+cmd|...` run as well.
_FORMULA_START = "^[-=+@\t\r]"


@dataclass(frozen=True, slots=True)
class Table:
    columns: Sequence[str]
    personal: frozenset[str]
    # Text people typed (heads' names, region names given by admins), as opposed to
    # codes, numbers and fixed words: what a CSV must keep from running as a formula.
    free_text: frozenset[str]


TABLES = {
    ExportTable.household_year: Table(
        households.COLUMNS, households.PERSONAL, frozenset({"head_name"})
    ),
    ExportTable.village: Table(regions.VILLAGE_COLUMNS, frozenset(), frozenset({"name"})),
    ExportTable.county: Table(regions.COUNTY_COLUMNS, frozenset(), frozenset({"name"})),
}


def has_personal_data(table: ExportTable) -> bool:
    return bool(TABLES[table].personal)


def _table_sql(
    table: ExportTable, scope: Scope, year: int, threshold: Threshold, now: datetime
) -> TextClause:
    if table is ExportTable.household_year:
        return households.household_year_sql(scope, year, threshold)
    if table is ExportTable.village:
        return regions.village_table_sql(scope, year, threshold, now)
    return regions.county_table_sql(scope, year, threshold, now)


def export_statement(
    table: ExportTable,
    scope: Scope,
    year: int,
    threshold: Threshold,
    *,
    now: datetime,
    include_names: bool,
    key: bytes,
) -> Select[Any]:
    """The rows of the file, in the table's order, with their binds."""
    shape = TABLES[table]
    rows = (
        _table_sql(table, scope, year, threshold, now)
        .columns(*(column(name) for name in shape.columns))
        .subquery("r")
    )
    selected: list[ColumnElement[Any]] = []
    for name in shape.columns:
        if name in shape.personal and not include_names:
            continue
        if name == "household_id" and not include_names:
            selected.append(pseudonym_sql(rows.c.household_id, key).label(PSEUDONYM_COLUMN))
        else:
            selected.append(rows.c[name])
    # A subquery with ORDER BY under a plain projection keeps its order in PostgreSQL.
    return select(*selected)


def neutralised(value: ColumnElement[Any]) -> ColumnElement[Any]:
    """Text that would start a formula, behind a single quote (shown, not run)."""
    text_value = type_coerce(value, Text)
    return case(
        (text_value.regexp_match(_FORMULA_START), literal("'", Text) + text_value),
        else_=text_value,
    )


def flat_statement(
    statement: Select[Any],
    types: Sequence[tuple[str, str, str]],
    *,
    free_text: frozenset[str] = frozenset(),
) -> Select[Any]:
    """The same rows as text for a CSV: booleans `true`/`false`, lists joined by `;`.

    `types` are the result's (column, type name, type kind) as the server prepared
    them: PostgreSQL's own CSV would write `t`, `f` and `{a,b}`. Values of the
    `free_text` columns that a spreadsheet would take for a formula start with `'`.
    """
    rows = statement.subquery("e")
    selected: list[ColumnElement[Any]] = []
    for name, type_name, kind in types:
        value = rows.c[name]
        if name in free_text:
            selected.append(neutralised(value).label(name))
        elif kind == "array":
            selected.append(func.array_to_string(value, LIST_SEPARATOR).label(name))
        elif type_name == "bool":
            selected.append(cast(value, Text).label(name))
        else:
            selected.append(value)
    return select(*selected)


def count_statement(
    table: ExportTable, scope: Scope, year: int, threshold: Threshold, *, now: datetime
) -> Executable:
    """How many rows the file will have, asked before it is written (for progress).

    Household-year rows are one per household of the scope: counted from the
    households alone, not by computing every row twice. The region tables are small.
    """
    if table is ExportTable.household_year:
        return text(_HOUSEHOLDS.format(scope=sql_filter("h"))).bindparams(**scope.params)
    rows = (
        _table_sql(table, scope, year, threshold, now)
        .columns(*(column(name) for name in TABLES[table].columns))
        .subquery("r")
    )
    return select(func.count()).select_from(rows)


async def expected_rows(
    session: AsyncSession,
    table: ExportTable,
    scope: Scope,
    year: int,
    threshold: Threshold,
    *,
    now: datetime,
) -> int:
    count = await session.scalar(count_statement(table, scope, year, threshold, now=now))
    return int(count or 0)
