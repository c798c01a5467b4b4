"""Measuring a trained VLM: accuracy per skill on the held-out split, the official metrics of each
evaluation set (`data.eval`), and one sample's latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import Tensor

from search_space import EvalSpec
from trials.data import QADataset
from trials.data.base import EvalSet
from trials.data.images import RGB8
from trials.features import FeatureBatches
from trials.vlm.model import VLM


def evaluate(vlm: VLM, data: QADataset, feats: FeatureBatches, device: torch.device,
             batch: int = 64) -> dict[str, float]:
    """Overall and per-skill accuracy: closed skills by candidate scoring, open by exact match."""
    from trials.metrics import exact_match

    right: dict[str, list[bool]] = {}
    for skill in sorted(set(data.skills)):
        idx = [i for i, s in enumerate(data.skills) if s == skill]
        candidates = data.candidates.get(skill)
        for start in range(0, len(idx), batch):
            chunk = idx[start:start + batch]
            questions = [data.questions[i] for i in chunk]
            part, images = feats.batch(chunk, device), feats.images(chunk, device)
            if candidates:
                predicted = vlm.answer(questions, candidates, images=images, features=part)
                hits = [p == data.answers[i] for p, i in zip(predicted, chunk, strict=True)]
            else:
                predicted = vlm.generate(questions, images=images, features=part)
                hits = [exact_match(p, [data.answers[i]]) for p, i in zip(predicted, chunk, strict=True)]
            right.setdefault(skill, []).extend(hits)
    every = [hit for hits in right.values() for hit in hits]
    metrics = {"accuracy": sum(every) / max(1, len(every))}
    metrics.update({f"accuracy/{s}": sum(h) / len(h) for s, h in right.items()})
    return metrics


def load_evalsets(specs: Sequence[EvalSpec], image_size: int, pad: RGB8 | None) -> list[EvalSet]:
    """The evaluation sets of `data.eval`, read from their released files."""
    from trials.data.evalsets import load_evalset

    return [load_evalset(spec, image_size, pad) for spec in specs]


def evaluate_set(vlm: VLM, evalset: EvalSet, feats: FeatureBatches, device: torch.device,
                 batch: int = 64) -> dict[str, float]:
    """The set's official metrics, named `<set>/<metric>`: each question answered greedily (at most
    the set's max_new_tokens) or, for a set answered by likelihood, by its most likely choice."""
    data, predictions = evalset.qa, [""] * len(evalset.qa)
    groups: dict[tuple[str, ...] | None, list[int]] = {}
    for i in range(len(data)):
        groups.setdefault(None if evalset.choices is None else evalset.choices[i], []).append(i)
    for choices, idx in groups.items():
        for start in range(0, len(idx), batch):
            chunk = idx[start:start + batch]
            questions = [data.questions[i] for i in chunk]
            part, images = feats.batch(chunk, device), feats.images(chunk, device)
            if choices is None:
                said = vlm.generate(questions, images=images, features=part,
                                    max_new_tokens=evalset.spec.new_tokens())
            else:
                said = vlm.answer(questions, list(choices), images=images, features=part)
            for i, text in zip(chunk, said, strict=True):
                predictions[i] = text
    return {f"{evalset.label}/{name}": float(value) for name, value in evalset.score(predictions).items()}


def latency_ms(vlm: VLM, questions: Sequence[str], image: Tensor, device: torch.device,
               repeats: int = 10) -> float:
    """One sample's forward from its image (experts included), median after warm-up."""
    batch = vlm.encode(questions[:1], device=device)
    image = image.to(device)
    times = []
    vlm.eval()
    with torch.no_grad():
        for i in range(repeats + 3):
            sync(device)
            start = time.perf_counter()
            vlm(**batch, images=image)
            sync(device)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
