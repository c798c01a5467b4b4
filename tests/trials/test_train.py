"""One trial end to end: metrics, the feature cache, pruning, and every failure reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search_space import TrialConfig
from trials import TrialOptions, run_trial
from trials.cache import FeatureCache
from trials.train import warmup_cosine
from trials.vlm import experts as experts_module
from trials.vlm.model import VLM

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_METRICS = {"accuracy", "visual_tokens", "positions_used", "trainable_params", "total_params",
                    "latency_ms", "peak_mem_mb", "train_time_s"}
SKILLS = {"color", "shape", "count", "position", "relation", "small_text"}
ESTIMATES = {"est_mem_gb", "est_train_tflop", "est_gpu_hours", "micro_batch"}  # the resource model's


def tiny(**changes: object) -> TrialConfig:
    data = {"name": "tiny", "data": {"train_size": 48, "eval_size": 24, "image_size": 64},
            "experts": {"clip": {"source": "tiny-clip", "tokens": 4},
                        "dinov2": {"source": "tiny-dinov2", "tokens": 4}},
            "fusion": {"kind": "sequence_concat"}, "positions": "share_by_row",
            "train": {"steps": 4, "batch_size": 8, "lr": 1e-3}}
    for key, value in changes.items():
        data[key] = value
    return TrialConfig.model_validate(data)


def test_a_trial_measures_every_contract_metric() -> None:
    result = run_trial(tiny())
    assert result.status == "complete" and result.failure is None and result.steps == 4
    assert set(result.metrics) == (CONTRACT_METRICS | ESTIMATES | {f"accuracy/{s}" for s in SKILLS}
                                   | {"data/truncated", "data/skipped"})
    assert result.metrics["visual_tokens"] == 8 and result.metrics["positions_used"] == 4
    assert 0 <= result.metrics["accuracy"] <= 1
    assert 0 < result.metrics["trainable_params"] < result.metrics["total_params"]
    assert result.metrics["latency_ms"] > 0 and result.metrics["peak_mem_mb"] > 0
    payload = result.to_json()
    assert list(payload) == ["study", "number", "config_hash", "status", "failure", "steps", "config",
                             "metrics", "pareto_rank", "reused_from", "infeasible", "host"]
    assert payload["config_hash"] == tiny().config_hash
    assert json.loads(json.dumps(payload)) == payload


def test_same_seed_same_result() -> None:
    a, b = run_trial(tiny()), run_trial(tiny())
    for key in ("accuracy", "accuracy/color", "trainable_params"):
        assert a.metrics[key] == b.metrics[key]


def test_warm_cache_runs_no_expert_on_the_training_set(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    forward = experts_module.Expert.forward

    def counted(self: experts_module.Expert, images: torch.Tensor) -> list:
        batches.append(int(images.shape[0]))
        return forward(self, images)

    monkeypatch.setattr(experts_module.Expert, "forward", counted)
    cache = FeatureCache(tmp_path / "cache")
    run_trial(tiny(), TrialOptions(cache=cache))
    assert max(batches) > 1 and cache.stats.misses == 4  # 2 experts x (train, eval)
    batches.clear()
    # another design with the same experts, in a new process's cache (disk only)
    warm = FeatureCache(tmp_path / "cache")
    result = run_trial(tiny(fusion={"kind": "channel_concat"}), TrialOptions(cache=warm))
    assert result.status == "complete"
    assert warm.stats.disk_hits == 4 and warm.stats.misses == 0
    assert set(batches) == {1}, "only the one-image latency probe runs the experts"


def test_pruned_at_a_report() -> None:
    reports: list[int] = []

    def report(step: int, metrics: dict[str, float]) -> bool:
        reports.append(step)
        assert "accuracy" in metrics and "visual_tokens" in metrics
        return step >= 2

    point = tiny(train={"steps": 6, "batch_size": 8, "eval_every": 2})
    result = run_trial(point, TrialOptions(report=report))
    assert result.status == "pruned" and result.steps == 2 and reports == [2]
    assert result.failure is None and "accuracy" in result.metrics
    assert [step for step, _ in result.history] == [2]


def test_reports_at_every_eval_and_the_end() -> None:
    reports: list[int] = []
    point = tiny(train={"steps": 6, "batch_size": 8, "eval_every": 2})
    result = run_trial(point, TrialOptions(report=lambda s, m: reports.append(s) or False))
    assert result.status == "complete" and reports == [2, 4, 6]


def test_nan_from_a_huge_learning_rate() -> None:
    result = run_trial(tiny(train={"steps": 40, "batch_size": 8, "lr": 1e9, "grad_clip": 1e9,
                                   "warmup": 0.0}))
    assert result.status == "failed" and result.failure is not None
    assert result.failure.reason == "nan" and "lower the learning rate" in result.failure.message
    assert 0 < result.steps <= 40


def test_injected_exception_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    forward = VLM.forward
    calls = {"n": 0}

    def flaky(self: VLM, *args: object, **kwargs: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected fault")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(VLM, "forward", flaky)
    result = run_trial(tiny())
    assert result.status == "failed" and result.failure is not None
    assert result.failure.reason == "error" and result.failure.message == "RuntimeError: injected fault"
    assert result.steps == 3


def test_out_of_memory_is_oom(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: VLM, *args: object, **kwargs: object) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(VLM, "forward", boom)
    result = run_trial(tiny())
    assert result.failure is not None and result.failure.reason == "oom"
    assert "Tried to allocate" in result.failure.message


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"fusion": {"kind": "sequence_concat", "interleave": True},
      "experts": {"clip": {"source": "tiny-clip", "tokens": 4},
                  "dinov2": {"source": "tiny-dinov2", "tokens": 16}}}, "equal grids"),
    ({"fusion": {"kind": "gated_injection"}, "experts": {"clip": {"source": "tiny-clip"}}},
     "needs at least 2 experts"),
    ({"experts": {"conv": {"source": "tiny-convnext", "layers": [1, -1], "merge": "mean"}}},
     "one width"),
], ids=["interleave-unequal-grids", "mr-adapter-one-expert", "mean-of-unequal-widths"])
def test_impossible_design_is_invalid(changes: dict, fragment: str) -> None:
    result = run_trial(tiny(**changes))
    assert result.status == "failed" and result.failure is not None
    assert result.failure.reason == "invalid" and fragment in result.failure.message
    assert result.steps == 0


def test_warmup_cosine_schedule() -> None:
    f = warmup_cosine(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5, abs=0.02)
    assert f(99) < 0.01


POINT_YAML = """\
name: cli-point
data: {train_size: 48, eval_size: 24, image_size: 64}
experts:
  clip: {source: tiny-clip, tokens: 4}
fusion: {kind: channel_concat}
train: {steps: 50, batch_size: 8, lr: LR, warmup: 0.0, grad_clip: 1.0e9}
"""


def run_cli(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    point = tmp_path / "point.yaml"
    point.write_text(text)
    return subprocess.run([sys.executable, "-m", "vlmsearch", "trial", str(point), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_trial_json_and_exit_codes(tmp_path: Path) -> None:
    ok = run_cli(tmp_path, POINT_YAML.replace("LR", "1.0e-3"), "--steps", "3", "--json")
    assert ok.returncode == 0, ok.stderr
    payload = json.loads(ok.stdout.strip().splitlines()[-1])
    assert payload["status"] == "complete" and payload["steps"] == 3
    assert payload["config"]["train"]["steps"] == 3 and payload["failure"] is None
    assert set(payload["metrics"]) >= CONTRACT_METRICS
    assert "feature cache:" in ok.stderr and (tmp_path / "vlmsearch-runs" / "cache").is_dir()
    failed = run_cli(tmp_path, POINT_YAML.replace("LR", "1.0e+9"), "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout.strip().splitlines()[-1])["failure"]["reason"] == "nan"
    bad = run_cli(tmp_path, POINT_YAML.replace("tokens: 4", "tokens: 5"), "--json")
    assert bad.returncode == 2 and "not a perfect square" in bad.stderr and "Traceback" not in bad.stderr
    space = run_cli(tmp_path, POINT_YAML.replace("LR", "{low: 1.0e-4, high: 1.0e-2}")
                    + "objectives: [{metric: accuracy, direction: maximize}]\n")
    assert space.returncode == 2 and "a point needs single values" in space.stderr
