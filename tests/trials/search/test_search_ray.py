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

from tests.trials.search.search_helpers import MO_ASHA_SPACE, make_spec
from trials.search.study import SearchSpec

pytestmark = pytest.mark.xdist_group("ray")  # one Ray test at a time (each starts a local cluster)

SPACE = MO_ASHA_SPACE.replace("BACKEND", "ray").replace("name: contract", "name: ray-small")


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
