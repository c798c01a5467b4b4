"""Evaluators of non-VLM designs, keyed by their YAML name (`evaluator:`); the descriptors
(parameters each reads) are in `search_space.components.EVALUATORS`. The VLM evaluator is
`trials.train.train_vlm`, reached through `trials.outcome.run_trial` like these. Plugins (entry
points, see `search_space.plugins`) bring their own `evaluate`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from search_space.components import EVALUATORS as DESCRIPTORS
from search_space.registry import Registry
from search_space.result import TrialResult

Evaluate = Callable[[Any, Any], TrialResult]  # (TrialConfig, TrialOptions) -> result

EVALUATORS: Registry[Evaluate] = Registry("evaluator")


def _nasbench201(point: Any, options: Any) -> TrialResult:
    from trials.evaluators.nasbench201 import evaluate

    return evaluate(point, options)


EVALUATORS.register("nasbench201", _nasbench201, "NAS-Bench-201 table lookup")


def evaluator(name: str) -> Evaluate:
    """The evaluate function of evaluator `name`: a plugin's own, or a built-in one here."""
    return DESCRIPTORS.get(name).evaluate or EVALUATORS.get(name)
