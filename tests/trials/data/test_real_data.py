"""The issue's "done when": a trial trains a point on a multi-turn, text-only-mixed LLaVA set with a
Qwen2-configured LM and reports vqav2/accuracy, pope/f1 and mmbench/accuracy; a search uses one
of them as an objective; bad evaluation data exits 2 with nothing trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from search_space.point import TrialConfig
from tests.chat_models import save_qwen2
from tests.evalfiles import write_mmbench, write_pope, write_vqav2
from tests.llava_files import write_llava_set
from trials import TrialOptions, run_trial

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("real")
    return {"llava": write_llava_set(root / "llava", n=120, text_only=8, missing=12),
            "qwen2": save_qwen2(root / "qwen2"),
            "eval": [write_vqav2(root / "vqav2"), write_pope(root / "pope"), write_mmbench(root / "mmb")]}


def _data(files: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"benchmark": "llava", "path": str(files["llava"]),
            "image_folder": str(files["llava"].parent / "images"),
            "train_size": 24, "eval_size": 8, "image_size": 32, "skip_missing": True,
            "eval": files["eval"], **extra}


def _point(files: dict[str, Any]) -> dict[str, Any]:
    return {"name": "real", "data": _data(files),
            "language_model": {"source": str(files["qwen2"]), "train": "full"},
            "experts": {"clip": {"source": "tiny-clip", "tokens": 4}},
            "train": {"steps": 3, "batch_size": 4, "lr": 1e-3}}


def test_a_trial_on_llava_data_with_qwen2_reports_the_official_metrics(files: dict[str, Any]) -> None:
    result = run_trial(TrialConfig.model_validate(_point(files)), TrialOptions())
    assert result.status == "complete", result.failure
    m = result.metrics
    for name in ("vqav2/accuracy", "pope/f1", "pope/yes_ratio", "mmbench/accuracy", "accuracy"):
        assert 0 <= m[name] <= 1, name
    assert m["data/skipped"] >= 1  # the missing image's records


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_search_maximises_an_evaluation_sets_metric(files: dict[str, Any], tmp_path: Path) -> None:
    space = _point(files)
    space["train"]["lr"] = {"low": 1e-4, "high": 1e-3, "log": True}
    space.update(objectives=[{"metric": "pope/f1", "direction": "maximize"}],
                 search={"sampler": "random", "trials": 2, "seed": 0})
    file = tmp_path / "space.yaml"
    file.write_text(yaml.safe_dump(space))
    done = _cli("run", str(file), "--tracking", "none", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = _cli("results", "--study", "real", "--pareto", "--format", "json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    front = json.loads(shown.stdout)
    assert front and all("pope/f1" in json.dumps(row) for row in front)


def test_a_missing_annotation_file_is_bad_input_and_nothing_trains(files: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    point = _point(files)
    vqa = dict(files["eval"][0], annotations=str(tmp_path / "nowhere.json"))
    point["data"]["eval"] = [vqa, {"format": "pope", "path": str(files["llava"])}]  # not POPE's shape
    file = tmp_path / "point.yaml"
    file.write_text(yaml.safe_dump(point))
    done = _cli("trial", str(file), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "nowhere.json" in done.stderr and "'pope'" in done.stderr
    assert not (tmp_path / "vlmsearch-runs").exists() or not any((tmp_path / "vlmsearch-runs").rglob("*.db"))
