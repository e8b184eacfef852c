"""The benchmark's CPU accounting (`bench.cpu`) and the table the report makes of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cpu
from bench.report import _cpu_rows

pytestmark = pytest.mark.skipif(
    not Path("/proc/stat").exists(), reason="CPU accounting reads Linux's /proc"
)

# A child that starts a grandchild burning 0.6 s of CPU (process time, whatever the load).
BURN = (
    "import subprocess, sys\n"
    "subprocess.run([sys.executable, '-c', "
    "'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.6: pass'])\n"
)


def test_meter_counts_the_cpu_of_every_process_under_the_root_even_once_it_ended() -> None:
    parent = subprocess.Popen([sys.executable, "-c", BURN])
    meter = cpu.Meter(cpu.Roots(server=parent.pid, postgres=None), poll_s=0.05)
    meter.start()
    parent.wait(timeout=60)
    usage = meter.stop()

    assert set(usage.cores) == {"server"}
    # The grandchild's 0.6 s, read at its last sample before it ended.
    assert usage.cores["server"] * usage.wall_s >= 0.5
    assert usage.machine_cores * usage.wall_s >= 0.5


def test_a_root_that_is_gone_counts_nothing() -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait(timeout=60)

    assert cpu.tree_ticks({"server": done.pid}) == {"server": {}}


def test_nothing_is_measured_without_roots() -> None:
    assert cpu.start(None) is None
    assert cpu.start(cpu.Roots(server=None, postgres=None)) is None


def test_the_report_gives_each_parts_cpu_per_operation_and_the_all_cores_ceiling() -> None:
    run = {
        "clients": 32,
        "requests_per_s": 500.0,
        "client_cpu_cores": 0.1,
        "server_cpu_cores": 1.0,
        "postgres_cpu_cores": 0.75,
        "machine_cpu_cores": 1.9,
    }
    unmeasured = {"clients": 32, "requests_per_s": 400.0, "client_cpu_cores": 0.1}

    table = _cpu_rows([("checkout_cod", run), ("old_run", unmeasured)], 2, "an order")

    rows = [line for line in table if line.startswith("| checkout_cod")]
    assert rows == [
        "| checkout_cod | 32 | 500.0 | 1.90 | 2.000 | 1.500 | 0.200 | 0.100 | 3.800 | 526 |"
    ]
    assert not any(line.startswith("| old_run") for line in table)
    assert _cpu_rows([("old_run", unmeasured)], 2, "an order") == []


async def test_the_postmaster_is_found_only_as_a_postgres_process(database_url: str) -> None:
    postmaster = await cpu.postmaster_pid(database_url)
    if postmaster is None:
        pytest.skip("the test database's server is not on this machine")

    assert _name(postmaster).startswith("postgres")
    assert cpu.is_postgres(postmaster)
    # A backend's pid read from a server elsewhere may name any process here.
    assert not cpu.is_postgres(os.getpid())
    # Its own workers (checkpointer, WAL writer, ...) and backends are under it.
    assert len(cpu.tree_ticks({"postgres": postmaster})["postgres"]) > 1


def _name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text()
