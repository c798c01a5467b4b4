"""Taking turns on a local file: tools that create a new SQLite database (Optuna's tables, MLflow's
migrations) are not safe when two processes do it at once, so the processes that open one take a
lock file beside it first (the file of a URL: `common.urls.sqlite_path`)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
