"""`vlmsearch check` and the resource model as a user meets them: estimates printed for a point
and as ranges for a space, `--json`, `--device-profile`, and the designs it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search_space.resources.analytic import ANALYTIC_METRICS
from search_space.resources.devices import DEVICE_PROFILES
from tests.cli.test_cli import vlmsearch

ROOT = Path(__file__).resolve().parents[2]
PAPERS = sorted((ROOT / "examples" / "papers").glob("*.yaml"))


def test_a_space_prints_memory_flops_and_gpu_hour_ranges_and_what_cannot_train() -> None:
    result = vlmsearch("check", "examples/mousi.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "est. memory: " in out and "GB on h100 (80 GB)" in out
    assert "TFLOP a trial;" in out and "GPU-hours at MFU 0.4" in out
    # SAM's 4096 tokens with original positions exceed Vicuna's 4096 positions: named, with why
    assert "cannot train: 16 of 1152 designs" in out
    assert "beyond its max_position_embeddings (4096)" in out


def test_space_json_gives_every_analytic_metric_as_a_range() -> None:
    result = vlmsearch("check", "examples/mousi.yaml", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(ANALYTIC_METRICS) <= set(data)
    for name in ANALYTIC_METRICS:
        assert set(data[name]) == {"min", "max"} and data[name]["min"] <= data[name]["max"]
    assert data["est_mem_gb"]["max"] < 80 and data["device_profile"] == "h100"


@pytest.mark.parametrize("path", PAPERS, ids=[p.stem for p in PAPERS])
def test_every_paper_design_fits_one_80_gb_device(path: Path) -> None:
    result = vlmsearch("check", str(path), "--json", "--device-profile", "a100-80g")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(ANALYTIC_METRICS) <= set(data) and data["problems"] == []
    assert 0 < data["est_mem_gb"] <= 0.9 * 80 and data["micro_batch"] >= 1
    assert data["est_gpu_hours"] > 0 and data["est_train_tflop"] > 0
    assert data["device_profile"] == "a100-80g"


def test_the_profile_changes_the_plan_not_the_design() -> None:
    small = json.loads(vlmsearch("check", "examples/papers/eagle.yaml", "--json",
                                 "--device-profile", "a100-40g").stdout)
    large = json.loads(vlmsearch("check", "examples/papers/eagle.yaml", "--json",
                                 "--device-profile", "h200").stdout)
    assert small["config_hash"] == large["config_hash"]
    assert small["micro_batch"] < large["micro_batch"]
    assert small["est_gpu_hours"] > large["est_gpu_hours"]  # an A100's peak is a third of an H200's
    assert small["est_train_tflop"] > large["est_train_tflop"]  # checkpointing's recompute


def _point(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "point.yaml"
    file.write_text(text)
    return file


def test_a_point_that_cannot_fit_even_at_one_sample_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "examples/papers/eagle.yaml").read_text().replace(
        "train: lora, lora_rank: 64", "train: full")
    result = vlmsearch("check", str(_point(tmp_path, text)), "--device-profile", "a100-40g")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "does not fit one a100-40g (40 GB) even at micro-batch 1 with gradient checkpointing" \
        in result.stderr
    assert "lm " in result.stderr and "train the LM with lora instead of full" in result.stderr


def test_a_point_beyond_the_lm_positions_is_refused(tmp_path: Path) -> None:
    point = _point(tmp_path, "name: long\ndata: {image_size: 96}\n"
                   "experts: {clip: {source: tiny-clip, image_size: 384}}\n"
                   "positions: original\n")  # 48 x 48 = 2304 tokens; tiny-llama has 2048 positions
    result = vlmsearch("check", str(point))
    assert result.returncode == 2
    assert "positions: line 4: the LM sees up to 2320 positions (2304 visual + 16 text), beyond " \
        "its max_position_embeddings (2048); share positions" in result.stderr
    shared = _point(tmp_path, point.read_text().replace("original", "share_by_row"))
    assert vlmsearch("check", str(shared)).returncode == 0


def test_an_unknown_device_profile_is_named_with_the_fix() -> None:
    result = vlmsearch("check", "examples/comm_point.yaml", "--device-profile", "h10")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--device-profile: unknown device profile 'h10'; did you mean 'h100'?" in result.stderr
    listed = vlmsearch("check", "examples/comm_point.yaml", "--device-profile", "quantum")
    assert all(name in listed.stderr for name in DEVICE_PROFILES.names())


@pytest.mark.parametrize(("train", "fragment"), [
    ("{lr: 1.0e-3, stages: [{train: [connector], steps: 10, lr: 1.0e-3}]}",
     "train.lr: line 4: train.lr is not read when train.stages is given"),
    ("{steps: 99, stages: [{train: [connector], steps: 10, lr: 1.0e-3}]}",
     "train.steps: line 4: with train.stages, train.steps is the stages' total"),
    ("{stages: [{train: [lm], steps: 10, lr: 1.0e-3}]}",
     "train.stages[0].train: line 4: stage 1 trains ['lm'], but each is frozen"),
], ids=["lr", "steps", "frozen-lm"])
def test_stage_mistakes_are_named(tmp_path: Path, train: str, fragment: str) -> None:
    point = _point(tmp_path, "name: staged\nlanguage_model: {source: tiny-llama, train: frozen}\n"
                   f"experts: {{clip: {{source: tiny-clip}}}}\ntrain: {train}\n")
    result = vlmsearch("check", str(point))
    assert result.returncode == 2, result.stdout
    assert fragment in result.stderr
