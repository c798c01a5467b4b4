"""One VLM trial: a design point -> short-budget training -> measured numbers (`TrialResult`).
Failures never escape (the rules are in `trials.outcome`; its `run_trial` reaches this as the `vlm`
evaluator).

The recipe (precision, micro-batch, checkpointing) comes from the resource model for the device
the trial got (`trials.recipe`); the optimisation, stage by stage, is `trials.loop`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import torch

from search_space import Failure, FailureReason, InvalidDesign, TrialConfig, TrialResult, point_cost
from trials.cache import FeatureCache
from trials.conversations import Conversations, text_budget
from trials.data import QADataset, load_benchmark
from trials.data.base import ChatDataset, EvalSet
from trials.evaluate import evaluate, evaluate_set, latency_ms, load_evalsets
from trials.features import FeatureBatches, expert_features
from trials.loop import Loop, batch_order, warmup_cosine
from trials.outcome import TrialOptions, finite, guarded
from trials.parallel import Single
from trials.recipe import Recipe, plan_recipe
from trials.vlm.model import VLM, build_vlm

__all__ = ["PeakMemory", "TrialOptions", "batch_order", "default_cache", "device_of", "train_vlm",
           "warmup_cosine", "with_steps"]


def train_vlm(point: TrialConfig, options: TrialOptions, ranks: Single | None = None) -> TrialResult:
    """Train and evaluate the VLM design `point`; always returns a result (see trials.outcome).
    `ranks`: the processes of a data-parallel trial (rank 0 evaluates and reports)."""
    runner = _Runner(with_steps(point, options.steps), options, ranks or Single())
    return finite(guarded(runner.run, runner.failed))


def with_steps(point: TrialConfig, steps: int | None) -> TrialConfig:
    """`point` trained for `steps` in all (each stage scaled to keep its share)."""
    if steps is None:
        return point
    return point.model_copy(update={"train": point.train.with_total_steps(steps)})


def device_of(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                        "cpu" if name == "auto" else name)


class _Runner:
    def __init__(self, point: TrialConfig, options: TrialOptions, ranks: Single) -> None:
        self.point, self.options, self.ranks = point, options, ranks
        self.device = device_of(options.device)
        self.step = 0
        self.history: list[tuple[int, dict[str, float]]] = []
        self._static: dict[str, float] | None = None
        self.recipe: Recipe | None = None
        self.loop: Loop | None = None
        self.evalsets: list[EvalSet] = []
        self.set_feats: list[FeatureBatches] = []  # the evaluation sets' features, in order

    def failed(self, reason: FailureReason, message: str) -> TrialResult:
        step = self.loop.current if self.loop is not None else self.step  # the step it failed in
        return TrialResult(self.point, "failed", step, failure=Failure(reason, message),
                           history=self.history)

    def build(self) -> tuple[VLM, ChatDataset, QADataset]:
        try:
            point_cost(self.point)
            self.recipe = plan_recipe(self.point, self.device, self.options.resources)
            torch.manual_seed(self.point.train.seed)
            vlm = build_vlm(self.point, self.options.random_weights)
        except (InvalidDesign, ValueError) as exc:
            raise InvalidDesign(f"cannot build this design: {exc}") from exc
        vlm.use_precision(self.recipe.precision)
        if self.recipe.checkpointing:
            vlm.enable_checkpointing()
        data = self.point.data
        pad = vlm.pad_colour() if data.pad_to_square else None
        train, evaluation = load_benchmark(data, pad=pad)
        self.evalsets = load_evalsets(data.eval, data.image_size, pad)
        return vlm.to(self.device), train, evaluation

    def run(self) -> TrialResult:
        vlm, train, evaluation = self.build()
        cache = self.options.cache or FeatureCache(None)
        train_feats = expert_features(vlm, train, cache, self.device)
        eval_feats = expert_features(vlm, evaluation, cache, self.device)
        self.set_feats = [expert_features(vlm, s.qa, cache, self.device) for s in self.evalsets]
        assert self.recipe is not None
        self.text = Conversations(train, vlm, text_budget(vlm, self.point.data.max_length,
                                                          point_cost(self.point).visual_tokens))
        self.skipped = train.skipped
        self.loop = loop = Loop(vlm, self.text, train_feats, self.recipe, self.device, self.ranks)
        with PeakMemory(self.device) as memory:
            start = time.perf_counter()
            done = loop.run(self.point.train, lambda step, loss: self.after_step(vlm, step, loss,
                                                                                   eval_feats))
            train_time = time.perf_counter() - start
        status = "complete" if done else "pruned"
        if self.ranks.rank != 0:  # rank 0 evaluates and reports; the others only trained
            return TrialResult(self.point, status, self.step,
                               {"peak_mem_mb": memory.peak_mb, "train_time_s": train_time})
        if done:
            final = self.measure(vlm, eval_feats)
            self.history.append((self.step, final))
            if self.options.report:
                self.options.report(self.step, final)
        metrics = dict(self.history[-1][1])  # the final evaluation, or the one that pruned
        metrics.update(peak_mem_mb=memory.peak_mb, train_time_s=train_time)
        return TrialResult(self.point, status, self.step, metrics, history=self.history)

    def after_step(self, vlm: VLM, step: int, loss: float, eval_feats: FeatureBatches) -> bool:
        """Progress, and an evaluation where one is due; True when the report says stop."""
        self.step = step
        if self.options.progress and self.ranks.rank == 0:
            self.options.progress(step, self.point.train.steps, loss)
        if not self.evaluates_at(step):
            return False
        stop = False
        if self.ranks.rank == 0:
            metrics = self.measure(vlm, eval_feats)
            self.history.append((step, metrics))
            stop = bool(self.options.report and self.options.report(step, metrics))
        vlm.train()
        return self.ranks.any(stop)

    def evaluates_at(self, step: int) -> bool:
        every = self.point.train.eval_every
        due = step in self.options.report_at or bool(every and step % every == 0)
        return due and step < self.point.train.steps

    def measure(self, vlm: VLM, feats: FeatureBatches) -> dict[str, float]:
        """Accuracies now (the held-out split, then every evaluation set), plus the metrics that
        do not change while training and the data's counts."""
        vlm.eval()
        batch = self.options.eval_batch
        scores = evaluate(vlm, feats.data, feats, self.device, batch)
        for evalset, set_feats in zip(self.evalsets, self.set_feats, strict=True):
            scores.update(evaluate_set(vlm, evalset, set_feats, self.device, batch))
        return {**scores, **self.static_metrics(vlm, feats.data),
                "data/truncated": float(self.text.truncated), "data/skipped": float(self.skipped)}

    def static_metrics(self, vlm: VLM, data: QADataset) -> dict[str, float]:
        """Cost, parameters, latency and the resource model's estimates: once per trial
        (`micro_batch` as it ended, after any halving)."""
        assert self.recipe is not None
        if self._static is None:
            cost = point_cost(self.point)
            trained = {part for stage in self.point.train.stage_list() for part in stage.train}
            trainable = sum(p.numel() for part in trained for p in vlm.trainable_parts[part])
            self._static = {"visual_tokens": cost.visual_tokens, "positions_used": cost.positions_used,
                            "trainable_params": trainable,
                            "total_params": sum(p.numel() for p in vlm.parameters()),
                            "latency_ms": latency_ms(vlm, data.questions, data.images[:1], self.device),
                            **self.recipe.metrics}
        return {**self._static, "micro_batch": float(self.recipe.micro_batch)}


class PeakMemory:
    """Peak memory during a block: CUDA's allocator peak, or the process RSS sampled on CPU."""

    def __init__(self, device: torch.device, interval: float = 0.02) -> None:
        self.device, self.interval = device, interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread.start()
        return self

    def _sample(self) -> None:
        process = psutil.Process()
        while True:
            self.peak_mb = max(self.peak_mb, process.memory_info().rss / 2**20)
            if self._stop.wait(self.interval):
                return

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()


def default_cache(run_dir: str | Path = "vlmsearch-runs") -> FeatureCache:
    return FeatureCache(Path(run_dir) / "cache")
