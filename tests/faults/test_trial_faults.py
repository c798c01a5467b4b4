"""Faults inside trials, with real `vlmsearch run` processes and the fault plugin installed as an
entry point: a trial that raises, runs out of memory (a real allocation failure) or measures NaN
is recorded with its failure in the store, in Optuna (FAIL, so the sampler knows) and in MLflow,
and the search goes on; a Ray worker killed mid-trial is retried once, then recorded failed."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

from storage import ResultsStore
from tests.dashboard.mlflow_view import assert_mirrors_store
from tests.faults.helpers import (
    evaluations,
    finished_events,
    optuna_trials,
    start,
    stores,
    write_space,
)

REASON = {"raise": "error", "oom": "oom", "nan": "nan"}


def test_raise_oom_and_nan_are_recorded_failed_everywhere_and_the_search_goes_on(
        tmp_path: Path, plugin_env: dict[str, str]) -> None:
    write_space(tmp_path, faults="[none, raise, oom, nan]", trials=12)  # the grid: each fault 3 times
    search = start(tmp_path, {**plugin_env, "FAULT_LOG": str(tmp_path / "fault.log")})
    _, err = search.communicate(timeout=300)
    assert search.returncode == 0, err
    assert "Traceback" not in err
    tracking, storage = stores(tmp_path)
    with ResultsStore(storage, create=False) as store:
        trials = store.trials("faults")
    assert len(trials) == 12 and Counter(t.config["parameters"]["fault"] for t in trials)["oom"] == 3
    for t in trials:
        fault = t.config["parameters"]["fault"]
        if fault == "none":
            assert t.status == "complete" and t.failure is None
        else:
            assert t.status == "failed" and t.failure.reason == REASON[fault], t.failure
    messages = {t.config["parameters"]["fault"]: t.failure.message for t in trials if t.failure}
    assert "injected fault" in messages["raise"] and messages["oom"].startswith("out of memory")
    assert messages["nan"] == "non-finite accuracy"
    by_number = {t.number: t for t in optuna_trials(stores(tmp_path)[1], "faults")}
    for t in trials:  # the sampler was told: FAIL for each failure, the values of each success
        told = by_number[t.number]
        assert told.state == (TrialState.COMPLETE if t.status == "complete" else TrialState.FAIL)
        assert told.user_attrs.get("failure_reason") == (t.failure.reason if t.failure else None)
    seen = assert_mirrors_store(tracking, storage, "faults", token_limit=math.inf)
    assert {n for n, r in seen.by_number.items() if r.info.status == "FAILED"} == \
        {t.number for t in trials if t.failure}
    assert len(evaluations(tmp_path / "fault.log")) == 12, "each design evaluated once"


@pytest.mark.xdist_group("ray")
def test_a_killed_ray_worker_is_retried_once_then_the_trial_is_recorded_failed(
        tmp_path: Path, plugin_env: dict[str, str]) -> None:
    """Two slow designs: the first's worker is killed once (the retry finishes it), the second's
    at both tries (recorded failed, once)."""
    write_space(tmp_path, name="rayfaults", faults="[none, slow]", xs="[0, 1]", trials=4, backend="ray")
    log = tmp_path / "fault.log"
    search = start(tmp_path, {**plugin_env, "FAULT_LOG": str(log), "FAULT_SLOW_S": "4"})
    killed = _kill_slow_runs(log, search)
    _, err = search.communicate(timeout=300)
    assert search.returncode == 0, err
    assert "Traceback" not in err
    with ResultsStore(stores(tmp_path)[1], create=False) as store:
        trials = store.trials("rayfaults")
    assert len(trials) == 4 and finished_events(tmp_path, "rayfaults") == Counter(t.number for t in trials)
    slow = {t.config["parameters"]["x"]: t for t in trials if t.config["parameters"]["fault"] == "slow"}
    once, twice = (x for x, k in sorted(killed.items(), key=lambda item: item[1]))
    assert slow[once].status == "complete", slow[once].failure
    assert slow[twice].status == "failed" and "worker failed 2 times" in slow[twice].failure.message
    runs = Counter(x for _, x, f in evaluations(log) if f == "slow")
    assert runs == {once: 2, twice: 2}, "a killed trial ran again once, no more"


def _kill_slow_runs(log: Path, search: subprocess.Popen[str]) -> Counter[int]:
    """Kill each run of a slow design as it starts: the first design's first run, the second
    design's first two. Returns x -> kills."""
    killed: Counter[int] = Counter()
    plan: dict[int, int] = {}  # x -> runs to kill
    done = 0
    while sum(killed.values()) < 3:
        assert search.poll() is None, search.communicate()
        slow = [(pid, x) for pid, x, fault in evaluations(log) if fault == "slow"]
        for pid, x in slow[done:]:
            plan.setdefault(x, 1 if not plan else 2)
            if killed[x] < plan[x]:
                os.kill(pid, signal.SIGKILL)
                killed[x] += 1
        done = len(slow)
        time.sleep(0.05)
    return killed
