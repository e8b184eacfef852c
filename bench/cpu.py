"""Where a measurement's CPU went: the server's processes, PostgreSQL's, the whole machine.

Read from Linux's /proc: a group is a root process and every process under it (the
`marketplace serve` supervisor and its workers; the postmaster and its backends).
A `Meter` samples the groups in a thread while a scenario runs, so that a process
that ends during the run (a connection closed by the pool) keeps the CPU it had
used at its last sample; one that starts and ends between two samples is missed.
The machine's busy time (/proc/stat) counts everything, the load generator and
whatever else runs here included. Elsewhere than Linux nothing is measured.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from bench.db import connect

POLL_S = 0.5
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, user + system CPU ticks) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            data = handle.read()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: the fields follow the last ")".
    fields = data[data.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def machine_busy_ticks() -> int:
    """CPU ticks the machine spent on anything but idling and waiting for I/O."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values[:8]) - idle


def tree_ticks(roots: dict[str, int]) -> dict[str, dict[int, int]]:
    """For each named root process: the CPU ticks of it and every process under it."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := proc_stat(int(entry))) is not None:
            stats[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    out: dict[str, dict[int, int]] = {}
    for name, root in roots.items():
        found: dict[int, int] = {}
        todo = [root] if root in stats else []
        while todo:
            pid = todo.pop()
            found[pid] = stats[pid][1]
            todo.extend(children.get(pid, ()))
        out[name] = found
    return out


def is_postgres(pid: int) -> bool:
    """Whether the process is one of a PostgreSQL server's (by its name)."""
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().startswith("postgres")
    except OSError:
        return False


async def postmaster_pid(url: str) -> int | None:
    """The PostgreSQL server's main process, when this machine's /proc shows it.

    None when the server runs elsewhere: its backend's pid may then name some
    unrelated process here, which is why the process's name is checked.
    """
    conn = await connect(url)
    try:
        # Read while the backend lives: once the connection is closed it may be gone.
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        stat = proc_stat(backend) if is_postgres(backend) else None
    finally:
        await conn.close()
    if stat is None or not is_postgres(stat[0]):
        return None
    return stat[0]


@dataclass(frozen=True, slots=True)
class Roots:
    """The processes whose CPU a measurement reports (None: not on this machine)."""

    server: int | None
    postgres: int | None

    def named(self) -> dict[str, int]:
        return {
            name: pid
            for name, pid in (("server", self.server), ("postgres", self.postgres))
            if pid is not None
        }


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU used between a meter's start and stop, in cores (CPU seconds per second)."""

    wall_s: float
    cores: dict[str, float]  # by group name
    machine_cores: float


class Meter(threading.Thread):
    """Samples the groups' CPU until stopped; `usage()` then says what each used."""

    def __init__(self, roots: Roots, poll_s: float = POLL_S) -> None:
        super().__init__(daemon=True, name="cpu-meter")
        self.roots = roots.named()
        self.poll_s = poll_s
        self._stopped = threading.Event()
        self.first = tree_ticks(self.roots)
        self.last = {name: dict(ticks) for name, ticks in self.first.items()}
        self.busy_first = machine_busy_ticks()
        self.busy_last = self.busy_first
        self.started = time.perf_counter()
        self.ended = self.started

    def sample(self) -> None:
        """Read the groups' CPU now (the thread does it every `poll_s` once started)."""
        for name, ticks in tree_ticks(self.roots).items():
            self.last[name] |= ticks
        self.busy_last = machine_busy_ticks()
        self.ended = time.perf_counter()

    def run(self) -> None:
        while not self._stopped.wait(self.poll_s):
            self.sample()

    def stop(self) -> Usage:
        self._stopped.set()
        if self.is_alive():
            self.join()
        self.sample()
        return self.usage()

    def usage(self) -> Usage:
        wall = max(self.ended - self.started, 1e-9)
        cores = {
            name: sum(t - self.first[name].get(pid, 0) for pid, t in ticks.items())
            / TICKS_PER_S
            / wall
            for name, ticks in self.last.items()
        }
        machine = (self.busy_last - self.busy_first) / TICKS_PER_S / wall
        return Usage(wall, cores, machine)


def start(roots: Roots | None) -> Meter | None:
    """A running meter of `roots`, or None when there is nothing to measure here."""
    if roots is None or not roots.named() or not os.path.exists("/proc/stat"):
        return None
    meter = Meter(roots)
    meter.start()
    return meter
