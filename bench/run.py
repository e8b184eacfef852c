"""Run the catalogue benchmark end to end and write its figures as JSON.

    python -m bench.run [--products N] [--cooperatives N] [--duration S]
                        [--clients 16,64] [--workers 2] [--output bench/results/latest.json]

Starts an embedded PostgreSQL in a temporary folder (or uses --database-url),
creates and migrates a fresh database, loads the fictional catalogue, starts the
real server, measures every scenario at every client count, EXPLAINs the SQL of
each scenario, takes the pgbench baseline on the same PostgreSQL, then stops
everything. `python -m bench.report` turns the JSON into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import datagen, load, machine, pgbench, plans, scenarios
from bench.db import connect, create_database, drop_database, server_facts, target_of
from bench.server import running_server
from services.db import async_url, create_engine
from services.schema import upgrade

DATABASE = "marketplace_bench"
PGBENCH_DATABASE = "bench_pgbench"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--cooperatives", type=int, default=1_000)
    parser.add_argument(
        "--duration", type=float, default=15.0, help="seconds per scenario and client count"
    )
    parser.add_argument("--clients", default="16,64", help="comma-separated client counts")
    parser.add_argument(
        "--workers", type=int, default=2, help="uvicorn worker processes (one per core)"
    )
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds per scenario, unrecorded"
    )
    parser.add_argument(
        "--engine",
        choices=load.ENGINES,
        default="raw",
        help="load generator's HTTP client: raw (light) or httpx (about 0.65 ms CPU a request)",
    )
    parser.add_argument(
        "--db-pool-size", type=int, default=None, help="MARKETPLACE_DB_POOL_SIZE (default: app's)"
    )
    parser.add_argument(
        "--db-max-overflow",
        type=int,
        default=None,
        help="MARKETPLACE_DB_MAX_OVERFLOW (default: app's)",
    )
    parser.add_argument(
        "--max-requests", type=int, default=1_000_000, help="cap per scenario and client count"
    )
    parser.add_argument("--scenarios", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--pgbench-scale", type=int, default=10)
    parser.add_argument(
        "--pgbench-duration",
        type=int,
        default=0,
        help="seconds per pgbench run (default: --duration)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="an existing PostgreSQL (any database on it); default: embedded, in a temp folder",
    )
    parser.add_argument("--seed", type=int, default=98)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    args.client_counts = sorted({int(part) for part in args.clients.split(",") if part.strip()})
    if not args.client_counts or min(args.client_counts) < 1:
        parser.error("--clients needs positive integers")
    if not 0 < args.duration <= load.MAX_DURATION_S:
        parser.error(f"--duration must be in (0, {load.MAX_DURATION_S:.0f}]")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    args.pgbench_duration = args.pgbench_duration or max(1, round(args.duration))
    return args


def server_settings(args: argparse.Namespace) -> dict[str, str]:
    settings = {}
    if args.db_pool_size is not None:
        settings["MARKETPLACE_DB_POOL_SIZE"] = str(args.db_pool_size)
    if args.db_max_overflow is not None:
        settings["MARKETPLACE_DB_MAX_OVERFLOW"] = str(args.db_max_overflow)
    return settings


@contextmanager
def postgres_server(args: argparse.Namespace, folder: Path) -> Iterator[tuple[str, bool]]:
    """A maintenance URL of the server to use, and whether it is the embedded one."""
    if args.database_url:
        yield async_url(args.database_url).render_as_string(hide_password=False), False
        return
    from app.embedded import embedded_postgres

    with embedded_postgres(folder / "postgres-data", database="postgres") as url:
        yield url, True


async def prepare(args: argparse.Namespace, server_url: str) -> dict[str, Any]:
    url = await create_database(server_url, DATABASE)
    engine = create_engine(url)
    try:
        started = time.perf_counter()
        await upgrade(engine)
        migrated_s = time.perf_counter() - started
    finally:
        await engine.dispose()
    summary = await datagen.generate(
        url,
        products_count=args.products,
        cooperatives_count=args.cooperatives,
        seed=args.seed,
        jobs=machine.describe()["usable_cores"],
    )
    return {
        "url": url,
        "migrate_s": round(migrated_s, 2),
        "dataset": {
            "products": summary.products,
            "cooperatives": summary.cooperatives,
            "regions": summary.regions,
            "counties": len(summary.counties),
            "load_s": round(summary.seconds, 1),
        },
    }


async def sanity(base_url: str, scenario: scenarios.Scenario) -> list[dict[str, Any]]:
    """Each representative request once: it must answer 200; the item count is recorded.

    An empty page is a valid answer (a village may have no certified product in the
    price range at a small scale), so it is reported, not refused.
    """
    checks = []
    paths = [scenarios.listing_path(p) for p in scenario.explain] or scenario.paths[:1]
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for path in paths:
            response = await client.get(path)
            if response.status_code != 200:
                raise RuntimeError(f"{scenario.name}: {path} answered {response.status_code}")
            body = response.json()
            items = len(body["items"]) if "items" in body else 1
            checks.append({"path": path, "status": response.status_code, "items": items})
            if items == 0:
                print(f"  note: {path} lists no product", flush=True)
    return checks


async def sessions_opened(url: str) -> int:
    """PostgreSQL sessions ever opened on the database: shows pool churn under load."""
    conn = await connect(url)
    try:
        # Statistics are flushed at most once a second; wait for the latest.
        await asyncio.sleep(1.1)
        return int(
            await conn.fetchval(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            )
            or 0
        )
    finally:
        await conn.close()


async def measure(
    args: argparse.Namespace, url: str, base_url: str, chosen: list[scenarios.Scenario]
) -> list[dict[str, Any]]:
    out = []
    for scenario in chosen:
        checks = await sanity(base_url, scenario)
        # Warm caches, connection pools and PostgreSQL's plan caches; not recorded.
        await load.run(
            base_url,
            scenario.paths,
            clients=max(args.client_counts),
            duration_s=args.warmup,
            max_requests=args.max_requests,
            engine=args.engine,
        )
        results = []
        for clients in args.client_counts:
            opened = await sessions_opened(url)
            result = await load.run(
                base_url,
                scenario.paths,
                clients=clients,
                duration_s=args.duration,
                max_requests=args.max_requests,
                engine=args.engine,
            )
            opened = await sessions_opened(url) - opened - 1  # this probe's own session
            print(
                f"  {scenario.name:<24} {clients:>4} clients  {result.requests_per_s:>8.1f} req/s"
                f"  p50 {result.p50_ms:>7.2f}  p95 {result.p95_ms:>7.2f}  p99 {result.p99_ms:>7.2f}"
                f" ms  errors {result.errors}  client cpu {result.client_cpu_cores:.2f}"
                f"  new db sessions {opened}",
                flush=True,
            )
            results.append(result.as_dict() | {"db_sessions_opened": opened})
        out.append(
            {
                "name": scenario.name,
                "summary": scenario.summary,
                "listing": scenario.listing,
                "sanity": checks,
                "results": results,
            }
        )
    return out


def baseline(args: argparse.Namespace, server_url: str, version_num: int) -> dict[str, Any]:
    """pgbench -i into a database of its own, then every mode at every client count."""
    binary = pgbench.find_pgbench(version_num // 10000)
    url = asyncio.run(create_database(server_url, PGBENCH_DATABASE))
    target = target_of(url)
    cores = machine.describe()["usable_cores"]
    try:
        started = time.perf_counter()
        pgbench.initialise(binary, target, args.pgbench_scale)
        init_s = time.perf_counter() - started
        runs = []
        for mode in pgbench.MODES:
            for clients in args.client_counts:
                result = pgbench.run(
                    binary,
                    target,
                    mode,
                    clients=clients,
                    duration_s=args.pgbench_duration,
                    cores=cores,
                )
                print(
                    f"  pgbench {mode:<14} {clients:>4} clients  {result.tps:>9.1f} tps"
                    f"  avg {result.latency_avg_ms:.3f}  p99 {result.p99_ms:.3f} ms"
                    f"  failed {result.failed}",
                    flush=True,
                )
                runs.append(result.as_dict())
    finally:
        asyncio.run(drop_database(server_url, PGBENCH_DATABASE))
    return {"binary": binary, "scale": args.pgbench_scale, "init_s": round(init_s, 1), "runs": runs}


def attach_ratios(results: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    """Each API figure over the same figure of `pgbench -S` at the same client count."""
    select_only = {r["clients"]: r for r in runs if r["mode"] == "select-only"}
    for scenario in results:
        for result in scenario["results"]:
            base = select_only.get(result["clients"])
            if not base:
                continue

            def ratio(mine: float, theirs: float) -> float | None:
                return round(mine / theirs, 4) if theirs else None

            result["baseline"] = {
                "mode": "select-only",
                "tps": base["tps"],
                "p50_ms": base["p50_ms"],
                "p95_ms": base["p95_ms"],
                "p99_ms": base["p99_ms"],
                "rps_ratio": ratio(result["requests_per_s"], base["tps"]),
                "p50_ratio": ratio(result["p50_ms"], base["p50_ms"]),
                "p95_ratio": ratio(result["p95_ms"], base["p95_ms"]),
                "p99_ratio": ratio(result["p99_ms"], base["p99_ms"]),
            }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python -m bench.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {
        "schema": 1,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command.strip(),
        "machine": machine.describe(),
        "config": {
            "products": args.products,
            "cooperatives": args.cooperatives,
            "duration_s": args.duration,
            "clients": args.client_counts,
            "workers": args.workers,
            "server_settings": server_settings(args),
            "warmup_s": args.warmup,
            "engine": args.engine,
            "max_requests": args.max_requests,
            "pgbench_scale": args.pgbench_scale,
            "pgbench_duration_s": args.pgbench_duration,
            "seed": args.seed,
        },
    }
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="marketplace-bench-") as tmp,
        postgres_server(args, Path(tmp)) as (server_url, embedded),
    ):
        folder = Path(tmp)
        print(f"PostgreSQL: {'embedded' if embedded else target_of(server_url).host}", flush=True)
        prepared = asyncio.run(prepare(args, server_url))
        url: str = prepared["url"]
        try:
            facts = asyncio.run(server_facts(url))
            report["postgres"] = {"embedded": embedded, **facts}
            report["dataset"] = prepared["dataset"] | {"migrate_s": prepared["migrate_s"]}
            print(
                f"data: {args.products} products, {args.cooperatives} cooperatives "
                f"in {prepared['dataset']['load_s']} s",
                flush=True,
            )
            context = asyncio.run(scenarios.load_context(url))
            report["dataset"]["matches"] = asyncio.run(scenarios.count_matches(url, context))
            chosen = scenarios.build(context)
            if args.scenarios:
                wanted = {name.strip() for name in args.scenarios.split(",")}
                chosen = [s for s in chosen if s.name in wanted]
            with running_server(
                url, folder, workers=args.workers, settings=server_settings(args)
            ) as server:
                print(f"server: {server.base_url}, {args.workers} workers", flush=True)
                report["scenarios"] = asyncio.run(measure(args, url, server.base_url, chosen))
            # Errors are counted by kind; the server's own words about them are here.
            report["server_log_tail"] = server.log_tail()
            listings = [(s.name, p) for s in chosen for p in s.explain]
            product_id: uuid.UUID | None = context.product_ids[0]
            if not any(s.name == "product_by_id" for s in chosen):
                product_id = None
            captured = asyncio.run(plans.capture(url, listings, product_id))
            report["plans"] = [plan.as_dict() for plan in captured]
            report["pgbench"] = baseline(args, server_url, facts["version_num"])
            attach_ratios(report["scenarios"], report["pgbench"]["runs"])
        finally:
            asyncio.run(drop_database(server_url, DATABASE))
    report["machine"]["load_average_end"] = machine.describe()["load_average"]
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    from bench.report import terminal_table

    print()
    print(terminal_table(report))
    print(f"\nwritten to {args.output}; render with: python -m bench.report {args.output}")


if __name__ == "__main__":
    main()
