"""What every registered search backend must do, run as a user runs it (`vlmsearch run` in a
process of its own, the fault plugin's evaluator as the trials): dedup hits do not count
against --trials and a used-up space stops the search with a reason; a search killed with
SIGKILL and resumed ends with as many distinct designs as trials requested; several objectives
with a constraint, MO-ASHA and a seed point (in process, tiny VLMs). What each backend tells
its sampler for every kind of result is held equal in test_tell_rule.py; Ctrl-C and --resume
run per backend in test_search.py and test_search_ray.py."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from search_space.events import Sinks
from search_space.pareto import non_dominated_ranks, objective_matrix
from tests.faults.conftest import plugin_env  # noqa: F401 (a fixture)
from tests.faults.helpers import evaluations, start, vlmsearch, wait_until, write_space
from tests.trials.search.search_helpers import MO_ASHA_SPACE, make_spec
from trials.search.backend import IMPLEMENTATIONS, backend_class
from trials.search.sinks import MemorySink
from trials.search.study import SearchError

BACKENDS = [pytest.param(name, marks=[pytest.mark.xdist_group("ray")] if name == "ray" else [])
            for name in IMPLEMENTATIONS.names()]


def stored(folder: Path, env: dict[str, str], study: str) -> list[dict]:
    done = vlmsearch(folder, env, "results", "--study", study, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_dedup_hits_do_not_count_and_a_used_up_space_stops(
        tmp_path: Path, plugin_env: dict[str, str], backend: str) -> None:  # noqa: F811
    write_space(tmp_path, name="used", xs="[0, 1, 2]", trials=5, sampler="random", backend=backend)
    done = vlmsearch(tmp_path, plugin_env, "run", "space.yaml", "--tracking", "none", "--concurrency", "1")
    assert done.returncode == 0, done.stderr
    assert "every design of the space is in study 'used' (3)" in done.stderr
    trials = stored(tmp_path, plugin_env, "used")
    trained = [t for t in trials if t["reused_from"] is None]
    assert sorted(t["config"]["parameters"]["x"] for t in trained) == [0, 1, 2]
    for repeat in (t for t in trials if t["reused_from"] is not None):
        original = next(t for t in trials if t["number"] == repeat["reused_from"])
        assert (repeat["config_hash"], repeat["metrics"]) == (original["config_hash"], original["metrics"])
        assert repeat["pareto_rank"] is None  # on the front once, as its original


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_grid_stops_at_its_last_point_without_repeating_one(
        tmp_path: Path, plugin_env: dict[str, str], backend: str) -> None:  # noqa: F811
    write_space(tmp_path, name="grid", xs="[0, 1, 2]", trials=5, sampler="grid", backend=backend)
    done = vlmsearch(tmp_path, plugin_env, "run", "space.yaml", "--tracking", "none", "--concurrency", "1")
    assert done.returncode == 0, done.stderr
    assert "every design of the space is in study 'grid' (3)" in done.stderr
    assert "GridSampler" not in done.stderr  # (Optuna warned of re-evaluating an exhausted grid)
    trials = stored(tmp_path, plugin_env, "grid")
    assert sorted(t["config"]["parameters"]["x"] for t in trials) == [0, 1, 2]
    assert all(t["reused_from"] is None for t in trials)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_then_resume_ends_with_as_many_distinct_designs_as_trials(
        tmp_path: Path, plugin_env: dict[str, str], backend: str) -> None:  # noqa: F811
    write_space(tmp_path, name="killed", xs=str(list(range(64))), trials=8, sampler="random", backend=backend)
    log = tmp_path / "fault.log"
    env = {**plugin_env, "FAULT_DELAY_S": "1.0", "FAULT_LOG": str(log)}
    search = start(tmp_path, env, "--tracking", "none")
    wait_until(lambda: len(evaluations(log)) >= 4, search, limit=240)
    assert search.poll() is None, "the search ended before its kill: make trials slower"
    os.killpg(search.pid, signal.SIGKILL)  # the driver and its workers, at once
    search.wait()
    before = len(evaluations(log))
    assert before < 8
    resumed = start(tmp_path, env, "--tracking", "none", "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    complete = [t for t in stored(tmp_path, env, "killed") if t["status"] == "complete"]
    counted = [t for t in complete if t["reused_from"] is None]
    assert len(counted) == 8
    assert len({t["config_hash"] for t in counted}) == 8, [t["config"]["parameters"] for t in counted]




@pytest.fixture
def started(backend: str) -> Iterator[None]:
    """A local Ray cluster for the Ray backend (2 CPUs, no dashboard), none for the others."""
    if backend != "ray":
        yield
        return
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_objective_with_a_constraint_mo_asha_and_a_seed_point(
        tmp_path: Path, backend: str, started: None) -> None:
    memory = MemorySink()
    searcher = backend_class(backend)(make_spec(tmp_path, MO_ASHA_SPACE.replace("BACKEND", backend)),
                                      Sinks([memory]))
    searcher.prepare()
    state = searcher.run()
    assert sorted(state.results) == list(range(6))
    statuses = [r.status for r in state.results.values()]
    assert "pruned" in statuses and "complete" in statuses, statuses
    seed = state.results[0]  # the seed point first; it interleaves unequal grids: refused, not trained
    assert seed.status == "failed" and seed.failure.reason == "invalid" and seed.steps == 0
    told = {t.number: t for t in searcher.sampler_study().trials}
    for number, result in state.results.items():
        expected = {"pruned": "PRUNED", "complete": "COMPLETE"}.get(
            result.status, "COMPLETE" if result.infeasible else "FAIL")  # infeasible: told as such
        assert told[number].state == getattr(optuna.trial.TrialState, expected), result
        if result.status == "pruned":
            assert result.steps == 4 and result.failure is None  # stopped at the only rung
        if result.status == "complete":
            assert result.steps == 12
            assert told[number].values == [result.metrics["accuracy"], result.metrics["visual_tokens"]]
    started_events = [e[1][0] for e in memory.events if e[0] == "trial_started"]
    finished = [e[1][0] for e in memory.events if e[0] == "trial_finished"]
    assert sorted(started_events) == sorted(finished) == list(range(6))
    feasible = [r for r in state.results.values() if r.status == "complete"
                and r.metrics["visual_tokens"] <= 24]
    ranks = non_dominated_ranks(objective_matrix([r.metrics for r in feasible], state.spec.space.objectives))
    assert [r.pareto_rank for r in feasible] == [int(x) for x in ranks]  # the front, by brute force
    assert memory.front is not None and memory.front.finished == 6
    with pytest.raises(SearchError, match="add --resume"):
        backend_class(backend)(make_spec(tmp_path, MO_ASHA_SPACE.replace("BACKEND", backend)),
                               Sinks([])).prepare()
