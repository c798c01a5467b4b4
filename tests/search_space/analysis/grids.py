"""Finite spaces whose every design is recorded, with a synthetic response of known effects,
through the results store's own write methods (what a search tells its sinks)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from search_space import TrialConfig, TrialResult, compile_space, parse, point_cost
from search_space.events import StudyInfo

# Seven subsets of three experts, crossed with fusion, positions, projector and two rates.
POOL_SPACE = """\
name: pooled
data: {benchmark: probe, train_size: 96, eval_size: 36, image_size: 64, seed: 0}
experts:
  pool:
    clip: {source: tiny-clip, tokens: 16}
    dinov2: {source: tiny-dinov2, tokens: 16}
    sam: {source: tiny-sam, tokens: 16}
  subset: {min: 1, max: 3}
fusion: {choices: [{kind: channel_concat}, {kind: sequence_concat}]}
positions: {choices: [original, share_all]}
projector: {choices: [linear, mlp2x_gelu]}
train: {steps: 12, batch_size: 16, lr: {choices: [1.0e-3, 3.0e-3]}}
objectives:
  - {metric: accuracy, direction: maximize}
  - {metric: visual_tokens, direction: minimize}
"""

# Both experts always: a balanced full factorial of five two-level factors (32 designs).
FACTORIAL_SPACE = """\
name: factorial
data: {benchmark: probe, train_size: 96, eval_size: 36, image_size: 64, seed: 0}
experts:
  pool:
    clip: {source: tiny-clip, tokens: {choices: [4, 16]}}
    dinov2: {source: tiny-dinov2, tokens: 16}
  subset: {min: 2, max: 2}
fusion: {choices: [{kind: channel_concat}, {kind: sequence_concat}]}
positions: {choices: [original, share_all]}
projector: {choices: [linear, mlp2x_gelu]}
train: {steps: 12, batch_size: 16, lr: {choices: [1.0e-3, 3.0e-3]}}
objectives:
  - {metric: accuracy, direction: maximize}
  - {metric: visual_tokens, direction: minimize}
"""

Response = Callable[[TrialConfig, np.random.Generator], float]


def planted(point: TrialConfig, rng: np.random.Generator) -> float:
    """Accuracy with known effects: dinov2 +0.10, sam +0.05, sequence_concat +0.03, share_all
    -0.02, and dinov2 x sequence_concat +0.08; noise sd 0.005."""
    experts, kind = point.canonical()["experts"], point.fusion.kind
    dino, seq = "dinov2" in experts, kind == "sequence_concat"
    return float(0.5 + 0.10 * dino + 0.05 * ("sam" in experts) + 0.03 * seq
                 - 0.02 * (point.positions == "share_all") + 0.08 * (dino and seq) + rng.normal(0, 0.005))


def grid(text: str) -> list[TrialConfig]:
    """Every design of the space, once."""
    points = list(compile_space(parse(text).space).points())
    return list({p.config_hash: p for p in points}.values())


def fill(url: str, text: str, response: Response, seed: int = 0, skip: int = 0) -> list[TrialConfig]:
    """Record every design of `text` as a complete trial of its study in the store at `url`
    (accuracy from `response`, visual_tokens from the cost model), and `skip` failed ones."""
    from storage import ResultsStore

    loaded, rng = parse(text), np.random.default_rng(seed)
    points = grid(text)
    with ResultsStore(url) as store:
        store.study_started(StudyInfo(loaded.space.name, loaded.space, text, {"sampler": "grid"}))
        for number, point in enumerate(points):
            store.trial_started(loaded.space.name, number, point)
            metrics = {"accuracy": response(point, rng), "visual_tokens": point_cost(point).visual_tokens}
            store.trial_finished(loaded.space.name, TrialResult(point, "complete", 12, metrics,
                                                                study=loaded.space.name, number=number))
        store.study_finished(loaded.space.name)
    return points
