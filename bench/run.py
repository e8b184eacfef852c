"""Run the benchmark end to end and write its figures as JSON.

    python -m bench.run [--products N] [--cooperatives N] [--duration S]
                        [--clients 16,64] [--order-clients 32] [--workers 2]
                        [--only catalogue,orders,webhooks,tracking,ledger]
                        [--ledger-lines N] [--ledger-batch-sizes 10000]
                        [--ledger-workers 2]
                        [--export-households N] [--export-entries N]
                        [--output bench/results/latest.json]

Starts an embedded PostgreSQL in a temporary folder (or uses --database-url),
creates and migrates a fresh database, loads the fictional catalogue, buyers and
shipped parcels, starts a fake Stripe in this process and the real server
against it, measures the catalogue scenarios at every client count, then
checkout, Stripe webhooks and tracking webhooks at every order client count,
EXPLAINs the SQL of each catalogue scenario, loads a backlog of delivered lines
and has `marketplace ledger-recognise` work it off (then `ledger-audit` check
it), loads a million households with ten million ledger entries into a database
of their own and exports their household-year table as CSV through a server on
it, beside PostgreSQL's own COPY of the same statement, takes the pgbench
baseline on the same PostgreSQL, then stops everything.
`python -m bench.report` turns the JSON into BENCHMARKS.md.
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

from app.settings import Settings
from bench import (
    checkout,
    cpu,
    datagen,
    exports,
    ledger,
    load,
    machine,
    pgbench,
    plans,
    scenarios,
    tracking,
)
from bench.db import create_database, drop_database, server_facts, sessions_opened, target_of
from bench.server import running_server
from services.db import async_url, create_engine
from services.schema import upgrade
from tests.fakes.stripe_server import FakeStripe, serve_fake_stripe

DATABASE = "marketplace_bench"
PGBENCH_DATABASE = "bench_pgbench"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"
GROUPS = (*checkout.GROUPS, *tracking.GROUPS, *ledger.GROUPS, *exports.GROUPS)
# The groups measured at the order client counts, beside pgbench's TPC-B-like script.
WRITE_GROUPS = {"orders", "webhooks", "tracking"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--cooperatives", type=int, default=1_000)
    parser.add_argument(
        "--duration", type=float, default=15.0, help="seconds per scenario and client count"
    )
    parser.add_argument(
        "--clients", default="16,64", help="catalogue: comma-separated client counts"
    )
    parser.add_argument(
        "--order-clients",
        default="32",
        help="checkout and webhooks (Stripe, tracking): comma-separated client counts "
        "(concurrent buyers, senders)",
    )
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help="comma-separated scenario groups: catalogue, orders, webhooks, tracking, ledger, "
        "exports (default: all)",
    )
    parser.add_argument("--buyers", type=int, default=2_000, help="buyer accounts to generate")
    parser.add_argument(
        "--checkout-products",
        type=int,
        default=1_000,
        help="listed products with unlimited stock that carts draw from",
    )
    parser.add_argument(
        "--webhook-events",
        type=int,
        default=0,
        help="events per measured webhook run (default: the warm-up's rate x duration x 1.25)",
    )
    parser.add_argument(
        "--shipments",
        type=int,
        default=20_000,
        help="shipped cash-on-delivery orders with a parcel for the tracking pushes",
    )
    parser.add_argument(
        "--ledger-lines",
        type=int,
        default=ledger.DEFAULT_LINES,
        help="ledger: delivered, paid order lines in the recognition backlog",
    )
    parser.add_argument(
        "--ledger-batch-sizes",
        default=str(ledger.DEFAULT_BATCH_SIZE),
        help="ledger: `ledger-recognise --batch-size` values, comma-separated; with several, "
        "each works on a copy of the loaded database",
    )
    parser.add_argument(
        "--ledger-workers",
        type=int,
        default=ledger.cli_default("workers"),
        help="ledger: `ledger-recognise --workers` (batches at once, a connection each)",
    )
    parser.add_argument(
        "--export-households",
        type=int,
        default=exports.DEFAULT_HOUSEHOLDS,
        help="exports: households in the exported province",
    )
    parser.add_argument(
        "--export-entries",
        type=int,
        default=exports.DEFAULT_ENTRIES,
        help="exports: ledger entries over the previous and this assessment year",
    )
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="MARKETPLACE_RUN_WORKER_IN_PROCESS=false (default: the in-process job worker runs)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="API worker processes of `marketplace serve` (one per core)",
    )
    parser.add_argument(
        "--catalogue-cache-seconds",
        type=float,
        default=None,
        help="MARKETPLACE_CATALOGUE_CACHE_SECONDS (default: app's, 2 s; 0 measures the database)",
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
    parser.add_argument(
        "--scenarios", default="", help="catalogue: comma-separated subset (default: all)"
    )
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
    args.client_counts = _counts(parser, "--clients", args.clients)
    args.order_client_counts = _counts(parser, "--order-clients", args.order_clients)
    args.groups = {part.strip() for part in args.only.split(",") if part.strip()}
    args.ledger_batch_size_list = _counts(
        parser, "--ledger-batch-sizes", args.ledger_batch_sizes, most=100_000
    )
    if not args.groups or not args.groups <= set(GROUPS):
        parser.error(f"--only takes a comma-separated subset of {', '.join(GROUPS)}")
    if args.groups & {"orders", "webhooks"} and (args.buyers < 1 or args.checkout_products < 1):
        parser.error("the orders and webhooks groups need --buyers and --checkout-products >= 1")
    if args.webhook_events < 0:
        parser.error("--webhook-events cannot be negative")
    if args.shipments < 0 or (args.shipments and args.buyers < 1):
        parser.error("--shipments cannot be negative, and shipments need --buyers >= 1")
    if "tracking" in args.groups and args.shipments < 1:
        parser.error("the tracking group needs --shipments >= 1")
    if "ledger" in args.groups and (args.ledger_lines < 1 or args.buyers < 1):
        parser.error("the ledger group needs --ledger-lines >= 1 and --buyers >= 1")
    if "exports" in args.groups and (args.export_households < 1 or args.export_entries < 2):
        parser.error("the exports group needs --export-households >= 1 and --export-entries >= 2")
    if not 0 < args.duration <= load.MAX_DURATION_S:
        parser.error(f"--duration must be in (0, {load.MAX_DURATION_S:.0f}]")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if not 1 <= args.ledger_workers <= 32:
        parser.error("--ledger-workers must be between 1 and 32")
    args.pgbench_duration = args.pgbench_duration or max(1, round(args.duration))
    return args


def _counts(
    parser: argparse.ArgumentParser, option: str, text: str, most: int = load.MAX_CLIENTS
) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        parser.error(f"{option} needs comma-separated positive integers")
    if not counts or not 1 <= min(counts) <= max(counts) <= most:
        parser.error(f"{option} needs integers between 1 and {most}")
    return counts


def server_settings(args: argparse.Namespace) -> dict[str, str]:
    """The server's settings that a flag changes (Stripe's and AfterShip's are added apart)."""
    settings = {}
    if args.db_pool_size is not None:
        settings["MARKETPLACE_DB_POOL_SIZE"] = str(args.db_pool_size)
    if args.db_max_overflow is not None:
        settings["MARKETPLACE_DB_MAX_OVERFLOW"] = str(args.db_max_overflow)
    if args.no_worker:
        settings["MARKETPLACE_RUN_WORKER_IN_PROCESS"] = "false"
    if args.catalogue_cache_seconds is not None:
        settings["MARKETPLACE_CATALOGUE_CACHE_SECONDS"] = str(args.catalogue_cache_seconds)
    return settings


def effective_pool(args: argparse.Namespace) -> dict[str, int]:
    """The connection pool each server process gets: the flags, else the app's defaults."""
    fields = Settings.model_fields
    return {
        "size": args.db_pool_size
        if args.db_pool_size is not None
        else int(fields["db_pool_size"].default),
        "max_overflow": args.db_max_overflow
        if args.db_max_overflow is not None
        else int(fields["db_max_overflow"].default),
    }


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
        buyers_count=args.buyers,
        checkout_products=args.checkout_products,
        shipments_count=args.shipments,
    )
    return {
        "url": url,
        "migrate_s": round(migrated_s, 2),
        "dataset": {
            "products": summary.products,
            "cooperatives": summary.cooperatives,
            "regions": summary.regions,
            "counties": len(summary.counties),
            "buyers": summary.buyers,
            "checkout_products": summary.checkout_products,
            "shipments": summary.shipments,
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


async def measure(
    args: argparse.Namespace,
    url: str,
    base_url: str,
    chosen: list[scenarios.Scenario],
    roots: cpu.Roots | None,
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
                roots=roots,
            )
            opened = await sessions_opened(url) - opened - 1  # this probe's own session
            print(
                f"  {scenario.name:<24} {clients:>4} clients  {result.requests_per_s:>8.1f} req/s"
                f"  p50 {result.p50_ms:>7.2f}  p95 {result.p95_ms:>7.2f}  p99 {result.p99_ms:>7.2f}"
                f" ms  errors {result.errors}  client cpu {result.client_cpu_cores:.2f}"
                f"  new db sessions {opened}" + result.cpu_line(),
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


async def measure_orders(
    args: argparse.Namespace,
    url: str,
    base_url: str,
    jwt_secret: str,
    fake: FakeStripe,
    roots: cpu.Roots | None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The orders and webhooks groups, then what the database holds afterwards."""
    shoppers = await checkout.load_shoppers(url, jwt_secret, args.checkout_products)
    runner = checkout.Orders(
        url,
        base_url,
        fake,
        shoppers,
        checkout.LoadSettings(
            clients=args.order_client_counts,
            duration_s=args.duration,
            warmup_s=args.warmup,
            max_requests=args.max_requests,
            engine=args.engine,
            webhook_events=args.webhook_events,
            seed=args.seed,
            roots=roots,
        ),
        say=lambda line: print(line, flush=True),
    )
    results = await runner.measure(args.groups)
    check = await runner.database_check()
    if not check["consistent"]:
        print(f"  warning: the database does not hold what the scenarios did: {check}")
    return results, check


async def measure_tracking(
    args: argparse.Namespace, url: str, base_url: str, roots: cpu.Roots | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The tracking group, then what the database holds afterwards."""
    parcels = await tracking.load_parcels(url, args.seed)
    runner = tracking.Tracking(
        url,
        base_url,
        tracking.PushPlan(
            base_url,
            parcels,
            in_flight=tracking.IN_FLIGHT_PER_SENDER * max(args.order_client_counts),
        ),
        checkout.LoadSettings(
            clients=args.order_client_counts,
            duration_s=args.duration,
            warmup_s=args.warmup,
            max_requests=args.max_requests,
            engine=args.engine,
            webhook_events=args.webhook_events,
            seed=args.seed,
            roots=roots,
        ),
        say=lambda line: print(line, flush=True),
    )
    results = await runner.measure()
    check = await runner.database_check()
    if not check["consistent"]:
        print(f"  warning: the database does not hold what the tracking pushes did: {check}")
    return results, check


def pgbench_plan(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(mode, clients) to run: every mode for the catalogue, TPC-B-like for the writes."""
    runs: set[tuple[str, int]] = set()
    if "catalogue" in args.groups:
        runs |= {(mode, clients) for mode in pgbench.MODES for clients in args.client_counts}
    if args.groups & WRITE_GROUPS:
        runs |= {("tpcb-like", clients) for clients in args.order_client_counts}
    if "ledger" in args.groups:
        # Recognition works over one connection per worker: the script at as many clients.
        runs.add(("tpcb-like", args.ledger_workers))
    modes = list(pgbench.MODES)
    return sorted(runs, key=lambda run: (modes.index(run[0]), run[1]))


def baseline(args: argparse.Namespace, server_url: str, version_num: int) -> dict[str, Any]:
    """pgbench -i into a database of its own, then each (mode, client count) of the plan."""
    binary = pgbench.find_pgbench(version_num // 10000)
    url = asyncio.run(create_database(server_url, PGBENCH_DATABASE))
    target = target_of(url)
    cores = machine.describe()["usable_cores"]
    try:
        started = time.perf_counter()
        pgbench.initialise(binary, target, args.pgbench_scale)
        init_s = time.perf_counter() - started
        runs = []
        for mode, clients in pgbench_plan(args):
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


def attach_ratios(
    results: list[dict[str, Any]], runs: list[dict[str, Any]], mode: str = "select-only"
) -> None:
    """Each API figure over the same figure of pgbench's `mode` at the same client count.

    The catalogue (reads) is set beside `-S`, checkout and the webhooks, Stripe's
    and tracking's (writes in a few statements per transaction), beside the
    TPC-B-like script.
    """
    same_mode = {r["clients"]: r for r in runs if r["mode"] == mode}
    for scenario in results:
        for result in scenario["results"]:
            base = same_mode.get(result["clients"])
            if not base:
                continue

            def ratio(mine: float, theirs: float) -> float | None:
                return round(mine / theirs, 4) if theirs else None

            result["baseline"] = {
                "mode": mode,
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
        "schema": 2,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command.strip(),
        "machine": machine.describe(),
        "config": {
            "products": args.products,
            "cooperatives": args.cooperatives,
            "duration_s": args.duration,
            "clients": args.client_counts,
            "order_clients": args.order_client_counts,
            "groups": [group for group in GROUPS if group in args.groups],
            "workers": args.workers,
            "server_settings": server_settings(args),
            "db_pool": effective_pool(args),
            "worker_in_process": not args.no_worker,
            "stripe": "fake (tests.fakes.stripe_server), served from a thread of the bench process",
            "aftership": "webhook secret only (no API key: nothing is polled); pushes built by "
            "tests.fakes.tracking_pushes",
            "buyers": args.buyers,
            "checkout_products": args.checkout_products,
            "webhook_events": args.webhook_events,
            "shipments": args.shipments,
            "ledger_lines": args.ledger_lines,
            "ledger_batch_sizes": args.ledger_batch_size_list,
            "ledger_workers": args.ledger_workers,
            "export_households": args.export_households,
            "export_entries": args.export_entries,
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
                f"data: {args.products} products, {args.cooperatives} cooperatives, "
                f"{prepared['dataset']['buyers']} buyers, {prepared['dataset']['shipments']} "
                f"shipments in {prepared['dataset']['load_s']} s",
                flush=True,
            )
            catalogue = "catalogue" in args.groups
            chosen: list[scenarios.Scenario] = []
            context: scenarios.Context | None = None
            if catalogue:
                context = asyncio.run(scenarios.load_context(url))
                report["dataset"]["matches"] = asyncio.run(scenarios.count_matches(url, context))
                chosen = scenarios.build(context)
                if args.scenarios:
                    wanted = {name.strip() for name in args.scenarios.split(",")}
                    chosen = [s for s in chosen if s.name in wanted]
            report["scenarios"] = []
            report["orders"] = []
            report["tracking"] = []
            # Every group runs against the same server configuration, Stripe and
            # AfterShip included, so that a group repeated alone (--only) meets the
            # server it met before.
            with (
                serve_fake_stripe(checkout.fake_stripe()) as fake,
                running_server(
                    url,
                    folder,
                    workers=args.workers,
                    settings=server_settings(args)
                    | checkout.stripe_settings(fake.url)
                    | tracking.aftership_settings(),
                ) as server,
            ):
                # The ledger commands run later with the same settings as the server.
                app_settings = (
                    server_settings(args)
                    | checkout.stripe_settings(fake.url)
                    | tracking.aftership_settings()
                )
                print(
                    f"server: {server.base_url}, {args.workers} workers; fake Stripe: {fake.url}",
                    flush=True,
                )
                # Whose CPU each measured run reports: the server's and PostgreSQL's processes.
                roots = cpu.Roots(server.pid, asyncio.run(cpu.postmaster_pid(url)))
                if catalogue:
                    report["scenarios"] = asyncio.run(
                        measure(args, url, server.base_url, chosen, roots)
                    )
                if args.groups & {"orders", "webhooks"}:
                    report["orders"], report["orders_database"] = asyncio.run(
                        measure_orders(
                            args, url, server.base_url, server.jwt_secret, fake.state, roots
                        )
                    )
                    report["stripe_fake_calls"] = dict(fake.state.calls)
                if "tracking" in args.groups:
                    report["tracking"], report["tracking_database"] = asyncio.run(
                        measure_tracking(args, url, server.base_url, roots)
                    )
            # Errors are counted by kind; the server's own words about them are here.
            report["server_log_tail"] = server.log_tail()
            report["plans"] = []
            if chosen and context is not None:
                listings = [(s.name, p) for s in chosen for p in s.explain]
                product_id: uuid.UUID | None = context.product_ids[0]
                if not any(s.name == "product_by_id" for s in chosen):
                    product_id = None
                captured = asyncio.run(plans.capture(url, listings, product_id))
                report["plans"] = [plan.as_dict() for plan in captured]
            # After the server has stopped: its job worker would recognise the backlog too.
            if "ledger" in args.groups:
                report["ledger"] = ledger.measure(
                    ledger.Plan(
                        args.ledger_lines,
                        args.ledger_batch_size_list,
                        args.seed,
                        args.ledger_workers,
                    ),
                    url,
                    server_url,
                    DATABASE,
                    folder,
                    app_settings,
                    facts["version_num"],
                    say=lambda line: print(line, flush=True),
                )
            # In a database of its own, through a server of its own on it, with the same
            # configuration: its ten million entries stay out of the other groups' way.
            if "exports" in args.groups:
                with serve_fake_stripe(checkout.fake_stripe()) as fake:
                    report["exports"] = exports.measure(
                        exports.Plan(args.export_households, args.export_entries, args.seed),
                        server_url,
                        folder,
                        workers=args.workers,
                        settings=server_settings(args)
                        | checkout.stripe_settings(fake.url)
                        | tracking.aftership_settings(),
                        jobs=machine.describe()["usable_cores"],
                        say=lambda line: print(line, flush=True),
                    )
            # The exports group's baseline is COPY, taken above: pgbench only when a
            # group needs it.
            report["pgbench"] = (
                baseline(args, server_url, facts["version_num"]) if pgbench_plan(args) else {}
            )
            runs = report["pgbench"].get("runs", [])
            attach_ratios(report["scenarios"], runs)
            attach_ratios(report["orders"], runs, mode="tpcb-like")
            attach_ratios(report["tracking"], runs, mode="tpcb-like")
            if "ledger" in report:
                ledger.attach_baseline(report["ledger"], runs)
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
