"""Opening a store's database: bad URLs refused (never showing a password), SQLite made safe for
several processes.

SQLite (the default) runs in WAL mode with a busy timeout and foreign keys on; every write
transaction starts with `BEGIN IMMEDIATE`, so concurrent writers queue on the lock instead of
failing when a read transaction tries to become a write. PostgreSQL needs nothing special.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import NoSuchModuleError

from common import database_url, is_sqlite, redact_secrets, redact_url, sqlite_path, unencoded_at

DEFAULT_STORAGE = "sqlite:///vlmsearch-runs/results.db"
WRITE = "vlmsearch_write"  # execution option: this transaction will write (SQLite: BEGIN IMMEDIATE)
BUSY_TIMEOUT_MS = 60_000
POSTGRES_DRIVER = ("; PostgreSQL needs the psycopg driver: install the postgres extra, pip install "
                   "'vlmsearch[postgres]' (in a checkout: pip install -e '.[postgres]'), and write the URL "
                   "as postgresql+psycopg://USER:PASSWORD@HOST:5432/DB")


class StorageError(RuntimeError):
    """The store cannot be opened or used; the message names the store (never its password)."""


def parse_url(url: str) -> URL:
    """The URL parsed; refused: what is no database URL, and a SQLite URL with no file (`sqlite:///`,
    what `sqlite:///$DB` becomes with DB unset, or `:memory:`), whose database would keep nothing."""
    if unencoded_at(url):
        raise StorageError(f"the password of '{redact_url(url)}' holds an '@', which ends it early; write "
                           "each '@' in it as %40 (URL encoding)")
    parsed = database_url(url)
    if parsed is None:
        raise StorageError(f"not a database URL: '{redact_url(url)}'; use e.g. {DEFAULT_STORAGE} or "
                           "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB")
    if is_sqlite(url) and sqlite_path(url) is None:
        raise StorageError(f"'{redact_url(url)}' names no database file (is a variable in it unset?): an "
                           "in-memory database keeps nothing a search records; give a file, e.g. "
                           f"{DEFAULT_STORAGE}")
    return parsed


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other backends and in-memory databases); a
    string that is no database URL is refused."""
    parse_url(url)
    return sqlite_path(url)


def exists(url: str) -> bool:
    """False only for a SQLite file that is not there yet (a server database may be empty)."""
    path = sqlite_file(url)
    return path is None or path.exists()


def make_engine(url: str, *, create: bool = True, read_only: bool = False) -> Engine:
    """An engine on `url`; `create` makes the directory of a SQLite file; `read_only` opens a
    SQLite file so that nothing (not even its journal mode) can change."""
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            path = sqlite_file(url)
            if path is not None and create and not read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
            if read_only and path is not None:
                parsed = parsed.set(database=path.resolve().as_uri(), query={"mode": "ro", "uri": "true"})
            engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
            _sqlite_events(engine, read_only)
            return engine
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if backend == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": 10, "application_name": "vlmsearch"}
        return create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
        hint = POSTGRES_DRIVER if backend == "postgresql" else "; the store runs on SQLite or PostgreSQL"
        raise StorageError(f"cannot open storage {redact_url(url)}: no database driver for "
                           f"'{parsed.drivername}' ({redact_secrets(str(exc), url)}){hint}") from None


def _sqlite_events(engine: Engine, read_only: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, not by the driver
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not read_only:  # (the journal mode is written into the file)
            cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
            cursor.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes in WAL mode
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        write = connection.get_execution_options().get(WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def writer(engine: Engine) -> Engine:
    """The same engine, for transactions that write (SQLite takes its lock at BEGIN)."""
    return engine.execution_options(**{WRITE: True})
