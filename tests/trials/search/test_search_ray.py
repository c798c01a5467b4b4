"""The Ray Tune backend with real Ray: local, and a real two-node cluster on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.trials.search.search_helpers import make_spec
from trials.search.study import SearchSpec

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
