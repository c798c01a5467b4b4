"""The driver killed with SIGKILL at random moments (in a trial, between trials, while it writes
the store, Optuna or MLflow), again and again, then resumed: the study ends with exactly the
requested finished trials, each once in the store, Optuna, MLflow and the events log, and
nothing left RUNNING. Real processes, real SQLite and PostgreSQL, MLflow on SQLite."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

from optuna.trial import TrialState

from common.urls import is_sqlite
from storage import ResultsStore
from tests.dashboard.mlflow_view import assert_one_run_per_trial_none_running
from tests.faults.helpers import (
    evaluations,
    finished_events,
    optuna_trials,
    start,
    stores,
    wait_until,
    write_space,
)

TRIALS = 40
KILLS = {"sqlite": 5, "postgresql": 3}  # (the fault table in docs/FAULTS.md counts these)


def test_random_sigkills_then_resume_lose_nothing_and_count_nothing_twice(
        tmp_path: Path, plugin_env: dict[str, str], database: str) -> None:
    write_space(tmp_path, name="kills", xs=str(list(range(64))), trials=TRIALS, sampler="random")
    log = tmp_path / "fault.log"
    env = {**plugin_env, "FAULT_DELAY_S": "0.5", "FAULT_LOG": str(log)}  # short trials: kills land in writes
    backend = "sqlite" if is_sqlite(database) else "postgresql"
    rng = random.Random(7)
    flags = ("--storage", database, "--resume")
    kept: dict[int, str] = {}  # trial number -> its status, once recorded
    kills = 0
    while kills < KILLS[backend]:
        started = len(evaluations(log))
        search = start(tmp_path, env, *flags)
        wait_until(lambda: len(evaluations(log)) > started, search)  # noqa: B023 (in its loop now)
        time.sleep(rng.uniform(0.0, 2.0))
        assert search.poll() is None, "the search ended before its kill: make trials slower"
        os.killpg(search.pid, signal.SIGKILL)  # the driver and its workers, at once
        search.wait()
        kills += 1
        kept = _kept_as_before(database, kept)
    resumed = start(tmp_path, env, *flags)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    _kept_as_before(database, kept)
    trials = optuna_trials(database, "kills")
    counted = [t for t in trials if "result" in t.user_attrs and not t.user_attrs.get("interrupted")
               and t.user_attrs["result"].get("reused_from") is None]  # a dedup hit does not count
    assert len(counted) == TRIALS, "exactly the requested trials finished"
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    with ResultsStore(database, create=False) as store:
        stored = {t.number: t for t in store.trials("kills")}
    state = {"complete": TrialState.COMPLETE, "failed": TrialState.FAIL, "pruned": TrialState.PRUNED}
    by_number = {t.number: t for t in trials}
    assert {n: state[t.status] for n, t in stored.items()} == {n: by_number[n].state for n in stored}
    assert {t.number for t in counted} <= set(stored), "every counted trial is in the store"
    for t in trials:  # in Optuna only: asked for, then killed before it was recorded anywhere
        assert t.number in stored or (t.state == TrialState.FAIL and "result" not in t.user_attrs)
    events = finished_events(tmp_path, "kills")
    assert max(events.values()) == 1 and set(events) == set(stored), "each trial logged once"
    assert_one_run_per_trial_none_running(stores(tmp_path)[0], database, "kills")


def _kept_as_before(storage: str, kept: dict[int, str]) -> dict[int, str]:
    """What the store holds now; a trial recorded finished before a kill is unchanged after it."""
    try:
        with ResultsStore(storage, create=False) as store:
            now = {t.number: t.status for t in store.trials("kills")}
    except Exception:  # killed before the study was created
        return kept
    finished = {n: s for n, s in now.items() if s != "running"}
    assert Counter(now.keys()) == Counter(set(now)), "no number twice"
    for number, status in kept.items():
        assert finished.get(number) == status, f"trial {number} changed after a kill"
    return finished
