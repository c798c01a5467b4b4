"""The study's database goes away mid-search: PostgreSQL stopped for seconds and started again,
SQLite locked by another process. The search waits (with backoff, saying so once), then records
everything: the requested trials, each once, in the store, Optuna and MLflow."""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from storage import ResultsStore
from storage.testing import LocalPostgres, NoPostgres
from tests.dashboard.mlflow_view import assert_mirrors_store
from tests.faults.helpers import (
    evaluations,
    finished_events,
    optuna_trials,
    start,
    stores,
    wait_until,
    write_space,
)

TRIALS = 14


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A server of this test's own, since the test stops it."""
    try:
        server = LocalPostgres()
    except NoPostgres as exc:
        pytest.skip(f"PostgreSQL outage test skipped: {exc}")
    with server:
        yield server


def _search(tmp_path: Path, env: dict[str, str], storage: str) -> tuple[object, Path]:
    write_space(tmp_path, name="outage", xs=str(list(range(64))), trials=TRIALS, sampler="random")
    log = tmp_path / "fault.log"
    search = start(tmp_path, {**env, "FAULT_DELAY_S": "0.4", "FAULT_LOG": str(log)}, "--storage", storage)
    wait_until(lambda: len(evaluations(log)) >= 3, search)
    return search, log


def _everything_recorded(tmp_path: Path, storage: str) -> None:
    trials = optuna_trials(storage, "outage")
    counted = [t for t in trials if t.state == TrialState.COMPLETE  # a dedup hit does not count
               and t.user_attrs["result"].get("reused_from") is None]
    assert len(counted) == TRIALS
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    with ResultsStore(storage, create=False) as store:
        stored = store.trials("outage")
    assert len([t for t in stored if t.reused_from is None]) == TRIALS
    assert all(t.status == "complete" for t in stored)
    assert max(finished_events(tmp_path, "outage").values()) == 1
    assert_mirrors_store(stores(tmp_path)[0], storage, "outage", token_limit=math.inf)


def test_postgresql_down_for_seconds_then_back(tmp_path: Path, plugin_env: dict[str, str],
                                               own_postgres: LocalPostgres) -> None:
    storage = own_postgres.create_database("outage")
    search, _ = _search(tmp_path, plugin_env, storage)
    own_postgres.pause()
    time.sleep(6)
    own_postgres.resume()
    _, err = search.communicate(timeout=300)  # type: ignore[attr-defined]
    assert search.returncode == 0, err  # type: ignore[attr-defined]
    assert "is locked or unreachable" in err and "is back" in err and "Traceback" not in err
    _everything_recorded(tmp_path, storage)


def test_sqlite_locked_by_another_process(tmp_path: Path, plugin_env: dict[str, str]) -> None:
    storage = stores(tmp_path)[1]
    search, log = _search(tmp_path, plugin_env, storage)
    locker = sqlite3.connect(tmp_path / "vlmsearch-runs" / "results.db", timeout=60)
    locker.execute("BEGIN EXCLUSIVE")  # no other writer until it ends
    held = len(evaluations(log))
    time.sleep(6)
    locker.rollback()
    locker.close()
    _, err = search.communicate(timeout=300)  # type: ignore[attr-defined]
    assert search.returncode == 0, err  # type: ignore[attr-defined]
    assert "Traceback" not in err
    assert held < TRIALS, "the lock was taken mid-search"
    _everything_recorded(tmp_path, storage)
