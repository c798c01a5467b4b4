"""Searches with real Optuna, a real SQLite study and real worker processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from common.processes import STOPPED
from search_space import parse
from search_space.events import Sinks
from search_space.pareto import non_dominated_ranks, objective_matrix
from storage import ResultsStore
from tests.dashboard.mlflow_view import assert_one_run_per_trial_none_running
from tests.trials.search.search_helpers import SMALL_SPACE, make_spec
from trials.search.optuna_backend import OptunaBackend
from trials.search.sinks import MemorySink
from trials.search.study import SearchError, SearchSpec

SPACE = SMALL_SPACE


def spec(tmp_path: Path, text: str = SPACE, **changes: object) -> SearchSpec:
    return make_spec(tmp_path, text, **changes)


def search(s: SearchSpec) -> tuple[OptunaBackend, MemorySink]:
    memory = MemorySink()
    backend = OptunaBackend(s, Sinks([memory]))
    backend.prepare()
    backend.run()
    return backend, memory


FINITE = SPACE.replace("lr: {low: 1.0e-3, high: 3.0e-3, log: true}", "lr: 1.0e-3").replace(
    "tokens: {choices: [4, 16]}", "tokens: 4").replace("subset: {min: 1, max: 2}", "subset: {min: 2, max: 2}")


def test_dedup_reuses_and_seed_points_go_first(tmp_path: Path) -> None:
    seeded = FINITE.replace("search: {trials: 8", "search: {seed_points: [{experts: {clip: {source: "
                            "tiny-clip, tokens: 4}, dinov2: {source: tiny-dinov2, tokens: 16}}, "
                            "fusion: {kind: sequence_concat}, positions: share_all}], trials: 8")
    seeded = seeded.replace("early_stopping: {kind: mo_asha, min_steps: 4, reduction_factor: 3}",
                            "sampler: random")
    said: list[str] = []
    backend = OptunaBackend(spec(tmp_path, seeded, concurrency=1), Sinks([]), said.append)
    backend.prepare()
    backend.run()
    results = backend.state.results
    first = results[0].config
    assert (first.fusion.kind, first.positions) == ("sequence_concat", "share_all")
    reused = [r for r in results.values() if r.reused_from is not None]
    trained = [r for r in results.values() if r.reused_from is None]
    # 8 trials asked of a 4-design space: each design trained once, dedup hits not counted, and
    # the search says why it stops short
    assert len({r.config_hash for r in trained}) == len(trained) == 4
    assert reused, "a 4-point space sampled until all are drawn repeats points"
    assert any("every design of the space is in study 'small' (4)" in m for m in said), said
    for r in reused:
        original = results[r.reused_from]
        assert r.config_hash == original.config_hash and r.metrics == original.metrics
        assert r.pareto_rank is None  # on the front as its original, once
    assert len(results) == max(results) + 1


def test_existing_study_needs_resume(tmp_path: Path) -> None:
    search(spec(tmp_path, FINITE, trials=1, concurrency=1))
    with pytest.raises(SearchError, match="add --resume"):
        OptunaBackend(spec(tmp_path, FINITE, trials=2), Sinks([])).prepare()
    backend, _ = search(spec(tmp_path, FINITE, trials=2, concurrency=1, resume=True))
    assert sorted(backend.state.results) == [0, 1]
    changed = FINITE.replace("lr: 1.0e-3", "lr: 2.0e-3")
    with pytest.raises(SearchError, match="different space"):
        OptunaBackend(spec(tmp_path, changed, trials=3, resume=True), Sinks([])).prepare()


def test_single_objective_asha(tmp_path: Path) -> None:
    text = SPACE.replace("  - {metric: visual_tokens, direction: minimize}\n", "").replace(
        "kind: mo_asha", "kind: asha")
    backend, memory = search(spec(tmp_path, text, trials=6))
    assert len(backend.state.results) == 6
    assert any(e[0] == "trial_intermediate" for e in memory.events)


def run_cli(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vlmsearch", "run", "space.yaml", *args],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)


def finished_events(tmp_path: Path) -> list[dict]:
    path = tmp_path / "vlmsearch-runs" / "small" / "events.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in lines if e["event"] == "trial_finished"]


def wait_for(tmp_path: Path, count: int, process: subprocess.Popen[str], limit: float = 240) -> None:
    deadline = time.time() + limit
    while len(finished_events(tmp_path)) < count and time.time() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    assert len(finished_events(tmp_path)) >= count


def optuna_finished(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{tmp_path}/vlmsearch-runs/results.db")
    return [t for t in study.trials if "result" in t.user_attrs and not t.user_attrs.get("interrupted")]


def test_kill_9_then_resume_ends_with_exactly_the_requested_trials(tmp_path: Path) -> None:
    text = SPACE.replace("early_stopping: {kind: mo_asha, min_steps: 4, reduction_factor: 3}",
                         "early_stopping: {kind: none}").replace("steps: 12", "steps: 30")
    (tmp_path / "space.yaml").write_text(text)
    first = run_cli(tmp_path, "--trials", "6", "--concurrency", "1")
    wait_for(tmp_path, 2, first)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its workers die at once
    first.wait()
    before = {e["number"]: e for e in finished_events(tmp_path)}
    resumed = run_cli(tmp_path, "--trials", "6", "--concurrency", "1", "--resume")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "Pareto front" in out
    finished = optuna_finished(tmp_path)
    assert len(finished) == 6
    after = {e["number"]: e for e in finished_events(tmp_path)}
    assert len(after) == sum(1 for e in finished_events(tmp_path)), "each trial once"
    stopped = {n for n, e in after.items() if (e.get("failure") or {}).get("message") == STOPPED}
    assert len(after) - len(stopped) == 6, "the requested trials, and those the kill caught, failed"
    for number, event in before.items():
        assert after[number] == event, "a trial finished before the kill is kept as it was"
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{tmp_path}/vlmsearch-runs/results.db")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    tracking, storage = _stores(tmp_path)
    seen = assert_one_run_per_trial_none_running(tracking, storage)
    with ResultsStore(storage, create=False) as store:  # a trial the kill caught, if any, failed in both
        orphans = {t.number for t in store.trials("small")
                   if t.failure and "stopped before" in t.failure.message}
    assert orphans == {n for n, r in seen.by_number.items()
                       if "stopped before" in r.data.tags.get("failure_message", "")}


def _stores(tmp_path: Path) -> tuple[str, str]:
    """(tracking, storage) of a `vlmsearch run` in tmp_path with the default locations."""
    return (f"sqlite:///{tmp_path}/vlmsearch-runs/mlflow.db", f"sqlite:///{tmp_path}/vlmsearch-runs/results.db")


def test_ctrl_c_exits_130_and_resume_continues(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(SPACE.replace("steps: 12", "steps: 40").replace(
        "early_stopping: {kind: mo_asha, min_steps: 4, reduction_factor: 3}", "early_stopping: {kind: none}"))
    first = run_cli(tmp_path, "--trials", "3", "--concurrency", "1")
    wait_for(tmp_path, 1, first)
    os.killpg(first.pid, signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{tmp_path}/vlmsearch-runs/results.db")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    resumed = run_cli(tmp_path, "--trials", "3", "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert len(optuna_finished(tmp_path)) == 3
    assert np.isfinite([t.values[0] for t in optuna_finished(tmp_path) if t.values]).all()
    assert_one_run_per_trial_none_running(*_stores(tmp_path))


def test_two_searches_on_one_study_share_the_work(tmp_path: Path) -> None:
    """Two terminals on one study: together exactly the requested trials, each once, both trained
    some, and the store's front is the front of all of them. Both start at once (a search that
    finds the other's trials running knows that search is alive, so it shares the rest at once)."""
    (tmp_path / "space.yaml").write_text(SPACE.replace(
        "early_stopping: {kind: mo_asha, min_steps: 4, reduction_factor: 3}", "early_stopping: {kind: none}"))
    first = run_cli(tmp_path, "--trials", "8", "--concurrency", "1", "--resume")
    second = run_cli(tmp_path, "--trials", "8", "--concurrency", "1", "--resume")
    for search in (first, second):
        out, err = search.communicate(timeout=600)
        assert search.returncode == 0, err
        assert "of 8 trials" in out, out
    assert len(optuna_finished(tmp_path)) == 8
    events = finished_events(tmp_path)
    assert sorted(e["number"] for e in events) == sorted({e["number"] for e in events}), "each once"
    tracking, storage = _stores(tmp_path)
    with ResultsStore(storage, create=False) as store:
        trials = store.trials("small")
        assert len(trials) == 8 and all(t.status in ("complete", "failed") for t in trials)
        with sqlite3.connect(f"{tmp_path}/vlmsearch-runs/results.db") as db:
            writers = db.execute("SELECT DISTINCT recorded_by FROM vs_trials").fetchall()
        assert len(writers) == 2, "both searches trained some"
        ranks, _ = store.ranks("small")
        space = parse(SPACE).space
        complete = [t for t in trials if t.status == "complete"]
        feasible = [t for t in complete if t.metrics["visual_tokens"] <= 24]
        truth = non_dominated_ranks(objective_matrix([t.metrics for t in feasible], space.objectives))
        assert {t.number for t, r in zip(feasible, truth, strict=True) if r == 0} == \
            {n for n, r in ranks.items() if r == 0}
    assert_one_run_per_trial_none_running(tracking, storage)
