"""What the figures were measured on: machine, Python, code revision."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent


def _run(*command: str) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=10, cwd=REPOSITORY
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def _proc_field(path: str, name: str) -> str:
    try:
        with open(path) as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def describe() -> dict[str, Any]:
    memory_kb = _proc_field("/proc/meminfo", "MemTotal").removesuffix(" kB")
    return {
        "uname": _run("uname", "-a") or " ".join(platform.uname()),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(int(memory_kb) / 1024 / 1024, 1) if memory_kb.isdigit() else None,
        "python": platform.python_version(),
        "git_commit": _run("git", "rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_run("git", "status", "--porcelain", "--untracked-files=no")),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }
