"""A throwaway PostgreSQL server for tests and benchmarks: `initdb` + `pg_ctl` on a loopback port.

    with LocalPostgres() as server:          # raises NoPostgres when the binaries are missing
        url = server.create_database("t1")   # postgresql+psycopg://postgres@127.0.0.1:PORT/t1

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (`runuser`).
A public surface of its own (not re-exported by `storage`): test infrastructure, not the store.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

__all__ = ["LocalPostgres", "NoPostgres", "create_database", "drop_database", "free_port"]


class NoPostgres(RuntimeError):
    """No PostgreSQL server binaries (initdb, pg_ctl) on this machine."""


def bindir() -> Path | None:
    """Where `initdb` and `pg_ctl` are: $PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which("pg_ctl")
    if found and (Path(found).parent / "initdb").exists():
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    for candidate in reversed(versions):
        if (Path(candidate).parent / "initdb").exists():
            return Path(candidate).parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPostgres:
    """Starts on `start()` (or `with`), stops and deletes its data directory on `stop()`."""

    def __init__(self, *, durable: bool = False) -> None:
        where = bindir()
        if where is None:
            raise NoPostgres("no PostgreSQL server binaries (initdb, pg_ctl) on this machine; install "
                             "them (Debian: apt-get install postgresql-15) or set VLMSEARCH_TEST_POSTGRES")
        self.bin, self.durable = where, durable
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise NoPostgres("running as root, PostgreSQL must run as another user, and `runuser` "
                                 "is missing")
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                raise NoPostgres("running as root, and there is no 'postgres' user to run the "
                                 "server") from None
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.base: Path | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = (self.base / "server.log").read_text(errors="replace")[-2000:] if self.base and \
                (self.base / "server.log").exists() else ""
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): "
                               f"{done.stderr.strip()}\n{log}")

    def start(self) -> str:
        self.base = Path(tempfile.mkdtemp(prefix="vlmsearch-pg-"))
        if self.as_user:
            shutil.chown(self.base, user="postgres")
        data = self.base / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")
        for attempt in range(3):  # the port can be taken between choosing and binding it
            self.port = free_port()
            try:
                return self.resume()
            except RuntimeError:
                if attempt == 2:
                    self.stop()
                    raise
        raise AssertionError("unreachable")

    def pause(self) -> None:
        """Stop the server, keeping its data (an outage; `resume()` ends it)."""
        assert self.base is not None
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> str:
        """Start the server on its port (again, after `pause()`)."""
        assert self.base is not None
        fast = "" if self.durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        data, server_log = self.base / "data", self.base / "server.log"
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=200{fast}"
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(server_log), "-w", "-t", "60", "-o",
                  options, "start")
        return self.url

    def stop(self) -> None:
        if self.base is None:
            return
        if (self.base / "data" / "postmaster.pid").exists():
            subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.base / "data"),
                            "-m", "fast", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def create_database(self, name: str) -> str:
        return create_database(self.url, name)


def create_database(server_url: str, name: str) -> str:
    """Create database `name` on the server of `server_url`; its URL."""
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()
