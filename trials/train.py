"""One VLM trial: a design point -> short-budget training -> measured numbers (`TrialResult`).
Failures never escape (the rules are in `trials.outcome`, whose `run_trial` is re-exported here).
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil
import torch
from torch import Tensor

from search_space.cost import point_cost
from search_space.errors import InvalidDesign
from search_space.point import TrialConfig
from search_space.result import Failure, FailureReason, TrialResult
from trials.cache import FeatureCache, cache_key
from trials.data import QADataset, load_benchmark
from trials.outcome import NonFiniteLoss, TrialOptions, finite, guarded
from trials.outcome import run_trial as run_trial  # the entry point, re-exported
from trials.vlm.model import VLM, build_vlm
from trials.vlm.reduce import Features

FEATURE_BATCH = 64


def train_vlm(point: TrialConfig, options: TrialOptions) -> TrialResult:
    """Train and evaluate the VLM design `point`; always returns a result (see trials.outcome)."""
    runner = _Runner(with_steps(point, options.steps), options)
    return finite(guarded(runner.run, runner.failed))


def with_steps(point: TrialConfig, steps: int | None) -> TrialConfig:
    if steps is None:
        return point
    return point.model_copy(update={"train": point.train.model_copy(update={"steps": steps})})


def device_of(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                        "cpu" if name == "auto" else name)


class _Runner:
    def __init__(self, point: TrialConfig, options: TrialOptions) -> None:
        self.point, self.options = point, options
        self.device = device_of(options.device)
        self.step = 0
        self.history: list[tuple[int, dict[str, float]]] = []
        self._static: dict[str, float] | None = None

    def failed(self, reason: FailureReason, message: str) -> TrialResult:
        return TrialResult(self.point, "failed", self.step, failure=Failure(reason, message),
                           history=self.history)

    def build(self) -> tuple[VLM, QADataset, QADataset]:
        try:
            point_cost(self.point)
            torch.manual_seed(self.point.train.seed)
            vlm = build_vlm(self.point).to(self.device)
        except (InvalidDesign, ValueError) as exc:
            raise InvalidDesign(f"cannot build this design: {exc}") from exc
        train, evaluation = load_benchmark(self.point.data)
        return vlm, train, evaluation

    def run(self) -> TrialResult:
        vlm, train, evaluation = self.build()
        cache = self.options.cache or FeatureCache(None)
        train_feats = expert_features(vlm, train, cache, self.device)
        eval_feats = expert_features(vlm, evaluation, cache, self.device)
        with PeakMemory(self.device) as memory:
            start = time.perf_counter()
            status = self.train(vlm, train, train_feats, evaluation, eval_feats)
            train_time = time.perf_counter() - start
        metrics = dict(self.history[-1][1])  # the final evaluation, or the one that pruned
        metrics.update(peak_mem_mb=memory.peak_mb, train_time_s=train_time)
        return TrialResult(self.point, status, self.step, metrics, history=self.history)  # type: ignore[arg-type]

    def train(self, vlm: VLM, data: QADataset, feats: dict[str, list[Features]],
              evaluation: QADataset, eval_feats: dict[str, list[Features]]) -> str:
        cfg = self.point.train
        params = [p for p in vlm.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.steps, cfg.warmup))
        encoded = vlm.encode(data.questions, data.answers)
        order = batch_order(len(data), cfg.batch_size, cfg.steps, cfg.seed)
        vlm.train()
        for self.step, idx in enumerate(order, start=1):
            loss = vlm(**slice_batch(encoded, idx, self.device), features=select(feats, idx, self.device))
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"loss became {loss.item()} at step {self.step}; lower the "
                                    "learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            schedule.step()
            if self.options.progress:
                self.options.progress(self.step, cfg.steps, loss.item())
            if self.evaluates_at(self.step) and self.intermediate(vlm, evaluation, eval_feats):
                return "pruned"
        final = self.measure(vlm, evaluation, eval_feats)
        self.history.append((self.step, final))
        if self.options.report:
            self.options.report(self.step, final)
        return "complete"

    def evaluates_at(self, step: int) -> bool:
        every = self.point.train.eval_every
        due = step in self.options.report_at or bool(every and step % every == 0)
        return due and step < self.point.train.steps

    def intermediate(self, vlm: VLM, data: QADataset, feats: dict[str, list[Features]]) -> bool:
        """Evaluate, report; True when the caller says stop."""
        metrics = self.measure(vlm, data, feats)
        self.history.append((self.step, metrics))
        vlm.train()
        return bool(self.options.report and self.options.report(self.step, metrics))

    def measure(self, vlm: VLM, data: QADataset, feats: dict[str, list[Features]]) -> dict[str, float]:
        """Accuracies now, plus the metrics that do not change while training."""
        vlm.eval()
        return {**evaluate(vlm, data, feats, self.device, self.options.eval_batch),
                **self.static_metrics(vlm, data)}

    def static_metrics(self, vlm: VLM, data: QADataset) -> dict[str, float]:
        """Cost, parameters and latency: measured once per trial."""
        if self._static is None:
            cost = point_cost(self.point)
            trainable, total = vlm.parameter_counts()
            self._static = {"visual_tokens": cost.visual_tokens, "positions_used": cost.positions_used,
                            "trainable_params": trainable, "total_params": total,
                            "latency_ms": latency_ms(vlm, data, self.device)}
        return dict(self._static)


def warmup_cosine(steps: int, warmup: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over `warmup * steps`, then cosine to zero."""
    ramp = max(1, round(warmup * steps))

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        progress = (step - ramp) / max(1, steps - ramp)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[Tensor]:
    """`steps` index batches: seeded epochs of a random permutation."""
    generator = torch.Generator().manual_seed(seed)
    size = min(batch_size, n)
    flat = torch.cat([torch.randperm(n, generator=generator)
                      for _ in range(math.ceil(steps * size / n))])
    return [flat[i * size:(i + 1) * size] for i in range(steps)]


def slice_batch(encoded: dict[str, Tensor], idx: Tensor, device: torch.device) -> dict[str, Tensor]:
    """Rows `idx` of pre-tokenized data, trimmed to their longest row."""
    width = int(encoded["attention_mask"][idx].sum(dim=1).max())
    return {k: v[idx, :width].to(device) for k, v in encoded.items()}


def select(feats: dict[str, list[Features]], idx: Tensor | Sequence[int], device: torch.device
           ) -> dict[str, list[Features]]:
    return {name: [Features(f.tokens[idx].to(device), f.grid) for f in layers]
            for name, layers in feats.items()}


def expert_features(vlm: VLM, data: QADataset, cache: FeatureCache, device: torch.device
                    ) -> dict[str, list[Features]]:
    """Each expert's pooled layer features for the whole data set, through the cache."""
    out = {}
    for name in vlm.expert_names:
        tokens = vlm.experts[name]
        expert = tokens.expert
        key = cache_key(expert.identity, expert.image_size, expert.layers, tokens.cfg.tokens,
                        data.fingerprint())

        def compute(tokens=tokens) -> list[Features]:
            parts = [tokens.features(data.images[i:i + FEATURE_BATCH].to(device))
                     for i in range(0, len(data), FEATURE_BATCH)]
            return [Features(torch.cat([p[j].tokens.cpu() for p in parts]), parts[0][j].grid)
                    for j in range(len(parts[0]))]

        out[name] = cache.get(key, compute)
    return out


def evaluate(vlm: VLM, data: QADataset, feats: dict[str, list[Features]], device: torch.device,
             batch: int = 64) -> dict[str, float]:
    """Overall and per-skill accuracy: closed skills by candidate scoring, open by exact match."""
    from trials.data.llava import exact_match

    right: dict[str, list[bool]] = {}
    for skill in sorted(set(data.skills)):
        idx = [i for i, s in enumerate(data.skills) if s == skill]
        candidates = data.candidates.get(skill)
        for start in range(0, len(idx), batch):
            chunk = idx[start:start + batch]
            questions = [data.questions[i] for i in chunk]
            part = select(feats, chunk, device)
            if candidates:
                predicted = vlm.answer(questions, candidates, features=part)
                hits = [p == data.answers[i] for p, i in zip(predicted, chunk, strict=True)]
            else:
                predicted = vlm.generate(questions, features=part)
                hits = [exact_match(p, [data.answers[i]]) for p, i in zip(predicted, chunk, strict=True)]
            right.setdefault(skill, []).extend(hits)
    every = [hit for hits in right.values() for hit in hits]
    metrics = {"accuracy": sum(every) / max(1, len(every))}
    metrics.update({f"accuracy/{s}": sum(h) / len(h) for s, h in right.items()})
    return metrics


def latency_ms(vlm: VLM, data: QADataset, device: torch.device, repeats: int = 10) -> float:
    """One sample's forward from its image (experts included), median after warm-up."""
    batch = vlm.encode(data.questions[:1], device=device)
    image = data.images[:1].to(device)
    times = []
    vlm.eval()
    with torch.no_grad():
        for i in range(repeats + 3):
            _sync(device)
            start = time.perf_counter()
            vlm(**batch, images=image)
            _sync(device)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
