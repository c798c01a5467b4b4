"""The training recipe: micro-batches with gradient accumulation, out-of-memory halving,
gradient checkpointing, precision, LLaVA-style stages and trainable experts."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from search_space import TrialConfig
from trials import TrialOptions, run_trial
from trials.cache import FeatureCache
from trials.conversations import Conversations
from trials.data import load_benchmark
from trials.features import expert_features
from trials.loop import Loop
from trials.parallel import Single
from trials.recipe import Recipe
from trials.vlm.model import VLM, build_vlm

BASE: dict[str, Any] = {
    "name": "recipe", "data": {"train_size": 48, "eval_size": 16, "image_size": 64},
    "experts": {"clip": {"source": "tiny-clip", "tokens": 4},
                "dinov2": {"source": "tiny-dinov2", "tokens": 4}},
    "fusion": {"kind": "resampler", "queries": 4, "depth": 2}, "positions": "share_by_row"}


def point(train: dict[str, Any] | None = None, **changes: Any) -> TrialConfig:
    train = train or {}
    recipe = {"batch_size": 8, "warmup": 0.0, **({} if "stages" in train else {"steps": 4, "lr": 1e-3})}
    return TrialConfig.model_validate({**BASE, **changes, "train": {**recipe, **train}})


def losses(p: TrialConfig, **options: Any) -> tuple[list[float], Any]:
    seen: list[float] = []
    result = run_trial(p, TrialOptions(progress=lambda step, total, loss: seen.append(loss), **options))
    assert result.status == "complete", result.failure
    return seen, result


def test_micro_batches_accumulate_to_the_same_losses() -> None:
    whole, result = losses(point({"micro_batch": 8}))
    assert result.metrics["micro_batch"] == 8
    for micro in (1, 2, 4):
        split, result = losses(point({"micro_batch": micro}))
        assert result.metrics["micro_batch"] == micro
        assert split == pytest.approx(whole, rel=1e-5, abs=1e-6), micro


def test_auto_micro_batch_is_the_whole_batch_when_it_fits() -> None:
    auto, result = losses(point())
    assert result.metrics["micro_batch"] == 8
    assert auto == losses(point({"micro_batch": 8}))[0]


def test_out_of_memory_halves_the_micro_batch_and_repeats_the_step(monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    """A real CUDA OOM is raised by the allocator; here the forward raises the same error type
    whenever it is given more than two samples."""
    forward = VLM.forward
    attempts: list[int] = []

    def tight(self: VLM, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        attempts.append(int(input_ids.shape[0]))
        if input_ids.shape[0] > 2 and self.training:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return forward(self, input_ids, *args, **kwargs)

    expected = losses(point({"micro_batch": 2}))[0]
    monkeypatch.setattr(VLM, "forward", tight)
    seen, result = losses(point({"micro_batch": 8}))
    assert result.metrics["micro_batch"] == 2 and result.steps == 4
    assert attempts[:2] == [8, 4]  # halved twice on the first step, then 2 from there on
    assert seen == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_out_of_memory_at_one_sample_is_an_oom_failure_with_the_estimate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: VLM, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    monkeypatch.setattr(VLM, "forward", full)
    result = run_trial(point())
    assert result.status == "failed" and result.failure is not None
    assert result.failure.reason == "oom"
    assert "micro-batch 1" in result.failure.message and "GB at micro-batch 1" in result.failure.message
    assert "Tried to allocate" in result.failure.message


@pytest.mark.parametrize("fusion", [{"kind": "resampler", "queries": 4, "depth": 2},
                                    {"kind": "sva", "queries": 4, "depth": 2, "width": 32}],
                         ids=["resampler", "sva"])
def test_gradient_checkpointing_gives_the_same_losses(fusion: dict[str, Any]) -> None:
    plain, _ = losses(point({"gradient_checkpointing": False}, fusion=fusion))
    checkpointed, _ = losses(point({"gradient_checkpointing": True}, fusion=fusion))
    assert checkpointed == pytest.approx(plain, rel=1e-5, abs=1e-6)


def _loop(p: TrialConfig) -> tuple[VLM, Loop]:
    torch.manual_seed(p.train.seed)
    vlm = build_vlm(p)
    train, _ = load_benchmark(p.data)
    feats = expert_features(vlm, train, FeatureCache(None), torch.device("cpu"))
    recipe = Recipe("fp32", p.train.batch_size, False)
    loop = Loop(vlm, Conversations(train, vlm, 1 << 20), feats, recipe, torch.device("cpu"), Single())
    return vlm, loop


def test_stages_train_only_their_parts_with_their_learning_rates() -> None:
    p = point({"stages": [{"train": ["connector"], "steps": 2, "lr": 1e-3},
                          {"train": ["connector", "lm"], "steps": 3, "lr": 1e-4,
                           "connector_lr": 5e-4}]}, language_model={"source": "tiny-llama",
                                                                      "train": "full"})
    assert p.train.steps == 5
    vlm, loop = _loop(p)
    snapshots: dict[int, dict[str, torch.Tensor]] = {0: _weights(vlm)}
    lrs: dict[int, list[float]] = {}

    def after(step: int, loss: float) -> bool:
        snapshots[step] = _weights(vlm)
        return False

    original = torch.optim.AdamW.step

    def record(self: torch.optim.AdamW, *args: Any, **kwargs: Any) -> Any:
        lrs[loop.current] = [g["lr"] for g in self.param_groups]
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = record  # type: ignore[method-assign]
    try:
        assert loop.run(p.train, after)
    finally:
        torch.optim.AdamW.step = original  # type: ignore[method-assign]
    assert torch.equal(snapshots[2]["lm"], snapshots[0]["lm"])           # stage 1 holds the LM
    assert not torch.equal(snapshots[2]["connector"], snapshots[0]["connector"])
    assert not torch.equal(snapshots[5]["lm"], snapshots[2]["lm"])       # stage 2 trains it
    assert lrs[1] == [1e-3] and lrs[3] == [5e-4, 1e-4]  # each stage's schedule from its own lrs
    assert lrs[5] == pytest.approx([2.5e-4, 0.5e-4])    # half way down its cosine


def _weights(vlm: VLM) -> dict[str, torch.Tensor]:
    return {part: torch.cat([p.detach().flatten().clone() for p in params])
            for part, params in vlm.trainable_parts.items() if params}


def test_stages_count_steps_across_stages_for_reports() -> None:
    reports: list[int] = []
    p = point({"stages": [{"train": ["connector"], "steps": 3, "lr": 1e-3},
                          {"train": ["connector", "lm"], "steps": 3, "lr": 1e-4}],
               "eval_every": 2})
    result = run_trial(p, TrialOptions(report=lambda step, m: reports.append(step) or False))
    assert result.status == "complete" and result.steps == 6 and reports == [2, 4, 6]


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_a_training_expert_runs_live_and_learns(mode: str, tmp_path: Any) -> None:
    p = point(experts={"clip": {"source": "tiny-clip", "tokens": 4, "train": mode},
                       "dinov2": {"source": "tiny-dinov2", "tokens": 4}})
    vlm, loop = _loop(p)
    trainable = vlm.trainable_parts["experts"]
    assert trainable and all(p.requires_grad for p in trainable)
    if mode == "lora":
        names = [n for n, q in vlm.experts["clip"].expert.named_parameters() if q.requires_grad]
        assert names and all("lora_" in n for n in names)
    before = torch.cat([q.detach().flatten().clone() for q in trainable])
    assert loop.run(p.train, lambda step, loss: False)
    assert not torch.equal(torch.cat([q.detach().flatten() for q in trainable]), before)
    assert set(loop.feats.cached) == {"dinov2"} and loop.feats.live  # clip is never cached
    cache = FeatureCache(tmp_path)
    result = run_trial(p, TrialOptions(cache=cache))
    assert result.status == "complete" and cache.stats.misses == 2  # dinov2 x (train, eval)
    frozen = run_trial(point(), TrialOptions(cache=FeatureCache(None)))
    assert result.metrics["trainable_params"] > frozen.metrics["trainable_params"]


def test_bf16_stores_what_never_trains_in_bf16() -> None:
    p = point({"precision": "bf16"}, language_model={"source": "tiny-llama", "train": "lora"})
    vlm = build_vlm(p)
    vlm.use_precision("bf16")
    trainable = {id(q) for params in vlm.trainable_parts.values() for q in params}
    for name, param in vlm.named_parameters():
        expected = torch.float32 if id(param) in trainable else torch.bfloat16
        assert param.dtype == expected, name
    result = run_trial(p)
    assert result.status == "complete", result.failure


def test_a_staged_space_budgets_rungs_on_the_stages_total() -> None:
    from search_space import parse

    space = parse("name: s\nexperts: {clip: {source: tiny-clip}}\n"
                  "train: {stages: [{train: [connector], steps: {low: 10, high: 40}, lr: 1.0e-3},"
                  " {train: [connector, lm], steps: 60, lr: 1.0e-4}]}\n"
                  "objectives: [{metric: accuracy, direction: maximize}]\n"
                  "search: {early_stopping: {kind: asha, min_steps: 90}}\n").space
    assert space.max_steps() == 100  # 40 + 60, not train.steps' default of 300
    from search_space import compile_space
    from search_space.checks import check
    from search_space.sampling import RandomDraw

    assert check(space) == []  # min_steps 90 is below the 100 the stages can run
    compiled = compile_space(space)
    assert "train.stages.0.steps" in compiled.free_parameters()  # a stage's field is searched
    drawn = {compiled.sample(RandomDraw(seed)).train.stages[0].steps for seed in range(12)}
    assert len(drawn) > 1 and all(10 <= s <= 40 for s in drawn)
    assert all(p.train.steps == p.train.stages[0].steps + 60
               for p in (compiled.sample(RandomDraw(seed)) for seed in range(4)))
