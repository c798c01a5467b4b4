"""The Ray Tune backend with real Ray: local, and a real two-node cluster on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import ray

from tests.trials.search_helpers import make_spec
from trials.search.ray_backend import RayBackend
from trials.search.sinks import MemorySink, Sinks
from trials.search.study import SearchError, SearchSpec

pytestmark = pytest.mark.xdist_group("ray")  # one Ray test at a time (each starts a local cluster)

SPACE = """\
name: ray-small
data: {benchmark: probe, train_size: 96, eval_size: 36, image_size: 64, seed: 0}
experts:
  pool:
    clip: {source: tiny-clip, tokens: {choices: [4, 16]}}
    dinov2: {source: tiny-dinov2, tokens: 16}
  subset: {min: 1, max: 2}
fusion:
  choices:
    - {kind: channel_concat}
    - {kind: sequence_concat, interleave: {choices: [false, true]}}
positions: {choices: [original, share_all]}
train: {steps: 12, batch_size: 16, lr: {low: 1.0e-3, high: 3.0e-3, log: true}}
objectives:
  - {metric: accuracy, direction: maximize}
  - {metric: visual_tokens, direction: minimize}
constraints:
  - {metric: visual_tokens, max: 24}
search: {backend: ray, trials: 6, concurrency: 2, seed: 1,
         seed_points: [{experts: {clip: {source: tiny-clip, tokens: 4},
                                  dinov2: {source: tiny-dinov2, tokens: 16}},
                        fusion: {kind: sequence_concat, interleave: true}}],
         early_stopping: {kind: mo_asha, min_steps: 4, reduction_factor: 3}}
"""


def spec(tmp_path: Path, text: str = SPACE, **changes: object) -> SearchSpec:
    return make_spec(tmp_path, text, **changes)


@pytest.fixture
def local_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_local_search_multi_objective_mo_asha(tmp_path: Path, local_ray: None) -> None:
    memory = MemorySink()
    backend = RayBackend(spec(tmp_path), Sinks([memory]))
    backend.prepare()
    state = backend.run()
    assert sorted(state.results) == list(range(6))
    statuses = [r.status for r in state.results.values()]
    assert "pruned" in statuses and "complete" in statuses, statuses
    invalid = state.results[0]  # the seed point interleaves unequal grids: settled, not trained
    assert invalid.status == "failed" and invalid.failure.reason == "invalid" and invalid.steps == 0
    told = {t.number: t.state for t in backend.searcher._ot_study.trials}
    for number, result in state.results.items():
        if result.status == "pruned":
            assert result.steps == 4 and told[number] == optuna.trial.TrialState.PRUNED
        elif result.status == "failed":  # infeasible points are known to the sampler as such
            expected = "COMPLETE" if result.failure.infeasible else "FAIL"
            assert told[number] == getattr(optuna.trial.TrialState, expected), result.failure
        elif result.status == "complete":
            assert told[number] == optuna.trial.TrialState.COMPLETE and result.steps == 12
    assert memory.front is not None and memory.front.finished == 6
    with pytest.raises(SearchError, match="add --resume"):
        RayBackend(spec(tmp_path), Sinks([])).prepare()


def test_ctrl_c_exits_130_and_resume_finishes_each_trial_once(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(SPACE.replace("steps: 12", "steps: 40").replace(
        "early_stopping: {kind: mo_asha, min_steps: 4, reduction_factor: 3}", "early_stopping: {kind: none}"))
    events = tmp_path / "vlmsearch-runs" / "ray-small" / "events.jsonl"

    def cli(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "vlmsearch", "run", "space.yaml", *args], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)

    def finished() -> list[int]:
        lines = events.read_text().splitlines() if events.exists() else []
        return [json.loads(x)["number"] for x in lines if '"trial_finished"' in x]

    first = cli("--trials", "4")
    deadline = time.time() + 300
    while not finished() and time.time() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGINT)
    _, err = first.communicate(timeout=180)
    assert first.returncode == 130, err
    assert "--resume" in err
    resumed = cli("--trials", "4", "--resume")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "Pareto front" in out
    assert sorted(finished()) == [0, 1, 2, 3], "each trial finished exactly once"
