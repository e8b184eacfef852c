"""Query plans of exactly the SQL the catalogue runs, not a hand-written copy of it.

The service builds and executes the statement; a SQLAlchemy cursor hook records
the SQL text and parameters as sent to asyncpg, and that same text is then run
under EXPLAIN (ANALYZE, BUFFERS) with the same parameters. The API's asyncpg
connections prepare their statements, and PostgreSQL may switch a prepared
statement to a generic plan (one for any parameter values) after five runs, so
the plan of the same statement PREPAREd and run with the scenario's parameters
is captured too, and the generic plan itself.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
from sqlalchemy import event

from bench.db import connect
from services.catalog import service as catalog
from services.db import create_engine, session_factory

_INDEX = re.compile(
    r"(?:Index Scan|Index Only Scan|Bitmap Index Scan)(?: Backward)? (?:using|on) (\w+)"
)
_SEQ = re.compile(r"Seq Scan on (\w+)")
_EXECUTION = re.compile(r"Execution Time: ([\d.]+) ms")
_PLANNING = re.compile(r"Planning Time: ([\d.]+) ms")
_PARAMETER = re.compile(r"\$\d+")


@dataclass(slots=True)
class Plan:
    scenario: str
    params: dict[str, str]
    sql: str
    parameters: list[str]
    plan: str
    indexes: list[str]
    seq_scans: list[str]
    execution_ms: float
    planning_ms: float
    # What a prepared statement runs after five executions; generic when it shows $n.
    prepared_plan: str = ""
    prepared_generic: bool = False
    prepared_indexes: list[str] = field(default_factory=list)
    prepared_seq_scans: list[str] = field(default_factory=list)
    prepared_execution_ms: float = 0.0
    # The generic plan forced (plan_cache_mode = force_generic_plan): the plan cache's
    # other option, which it may take for other parameter mixes.
    generic_plan: str = ""
    generic_indexes: list[str] = field(default_factory=list)
    generic_seq_scans: list[str] = field(default_factory=list)
    generic_execution_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def catalogue_query(params: dict[str, str]) -> catalog.CatalogueQuery:
    """The CatalogueQuery app/api/products.py builds from these query parameters."""

    def number(name: str) -> int | None:
        return int(params[name]) if name in params else None

    def flag(name: str) -> bool | None:
        return params[name] == "true" if name in params else None

    q = params.get("q")
    return catalog.CatalogueQuery(
        q=q.strip() or None if q else None,
        category=params.get("category"),
        region=params.get("region"),
        certified=flag("certified"),
        min_price=number("min_price"),
        max_price=number("max_price"),
        in_stock=flag("in_stock"),
        sort=catalog.Sort(params.get("sort", "newest")),
        limit=int(params.get("limit", "20")),
    )


def _names(pattern: re.Pattern[str], plan: str) -> list[str]:
    return sorted(set(pattern.findall(plan)))


def _time(pattern: re.Pattern[str], plan: str) -> float:
    match = pattern.search(plan)
    return float(match.group(1)) if match else 0.0


def _literal(value: Any) -> str:
    """A parameter as an SQL literal, for EXECUTE (PREPARE has inferred the types)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = value.isoformat() if isinstance(value, date | datetime) else str(value)
    return "'" + text.replace("'", "''") + "'"


async def _lines(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    return "\n".join(str(row[0]) for row in await conn.fetch(sql, *args))


async def _explain(
    conn: asyncpg.Connection, sql: str, parameters: Any, warm: list[Any]
) -> tuple[str, str, str]:
    """The plan for these values, the plan a prepared statement runs once it is warm,
    and the generic plan (what it would run if the plan cache chose generic).

    The first is planned with the values known (a custom plan). For the second the
    statement is PREPAREd and executed at least five times with the parameters of
    every representative request of the scenario in turn (`warm`), as the API's
    connections do with varied requests, so that PostgreSQL's plan cache has made
    its choice between a custom and a generic plan.
    """
    custom = await _lines(conn, f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *parameters)

    def execute(values: Any) -> str:
        return f"EXECUTE bench_plan({', '.join(_literal(v) for v in values)})"

    await conn.execute(f"PREPARE bench_plan AS {sql}")
    try:
        for index in range(max(5, len(warm))):
            await conn.execute(execute(warm[index % len(warm)]))
        prepared = await _lines(conn, f"EXPLAIN (ANALYZE, BUFFERS) {execute(parameters)}")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        try:
            generic = await _lines(conn, f"EXPLAIN (ANALYZE, BUFFERS) {execute(parameters)}")
        finally:
            await conn.execute("RESET plan_cache_mode")
    finally:
        await conn.execute("DEALLOCATE bench_plan")
    return custom, prepared, generic


async def capture(
    url: str,
    listings: list[tuple[str, dict[str, str]]],
    product_id: uuid.UUID | None,
) -> list[Plan]:
    """Plans for each (scenario, query parameters) listing and for one product by id."""
    engine = create_engine(url)
    recorded: list[tuple[str, Any]] = []

    def record(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if "FROM products" in statement and not statement.startswith("EXPLAIN"):
            recorded.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    plans: list[Plan] = []
    today = datetime.now(UTC).date()
    work: list[tuple[str, dict[str, str]]] = list(listings)
    if product_id is not None:
        work.append(("product_by_id", {"id": str(product_id)}))
    captured: list[tuple[str, dict[str, str], str, Any]] = []
    try:
        for scenario, params in work:
            recorded.clear()
            async with session_factory(engine)() as session:
                if scenario == "product_by_id":
                    await catalog.get_listing(session, uuid.UUID(params["id"]))
                else:
                    await catalog.catalogue(session, catalogue_query(params), today=today)
            if len(recorded) != 1:
                raise RuntimeError(f"{scenario}: expected one products query, saw {recorded}")
            captured.append((scenario, params, *recorded[0]))
    finally:
        await engine.dispose()
    conn = await connect(url)
    try:
        for scenario, params, sql, parameters in captured:
            # The other representative requests of the scenario that send the same SQL.
            warm = [p for s, _, q, p in captured if s == scenario and q == sql]
            # Once more before measuring, so that the plans show a warm cache.
            await conn.fetch(sql, *parameters)
            custom, prepared, generic = await _explain(conn, sql, parameters, warm)
            plans.append(
                Plan(
                    scenario=scenario,
                    params=params,
                    sql=sql,
                    parameters=[str(value) for value in parameters],
                    plan=custom,
                    indexes=_names(_INDEX, custom),
                    seq_scans=_names(_SEQ, custom),
                    execution_ms=_time(_EXECUTION, custom),
                    planning_ms=_time(_PLANNING, custom),
                    prepared_plan=prepared,
                    prepared_generic=bool(_PARAMETER.search(prepared)),
                    prepared_indexes=_names(_INDEX, prepared),
                    prepared_seq_scans=_names(_SEQ, prepared),
                    prepared_execution_ms=_time(_EXECUTION, prepared),
                    generic_plan=generic,
                    generic_indexes=_names(_INDEX, generic),
                    generic_seq_scans=_names(_SEQ, generic),
                    generic_execution_ms=_time(_EXECUTION, generic),
                )
            )
    finally:
        await conn.close()
    return plans
