"""Taking turns on a local file: tools that create a new SQLite database (Optuna's tables, MLflow's
migrations) are not safe when two processes do it at once, so the processes that open one take a
lock file beside it first."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (`sqlite:///path`, any SQLite driver); None for other URLs, for
    in-memory databases and for what is not a database URL at all (an MLflow `databricks`)."""
    from sqlalchemy.engine import make_url  # (only where a URL is opened: not at start-up)
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


@contextmanager
def one_at_a_time(path: Path | None) -> Iterator[None]:
    """Holds `<path>.lock` (an exclusive flock, freed when the process dies) while the body runs;
    does nothing when `path` is None (a server database: it has its own locks)."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
