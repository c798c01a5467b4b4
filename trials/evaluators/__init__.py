"""Evaluators keyed by their YAML name (`evaluator:`), reached through
`trials.outcome.run_trial`; the descriptors (whether it trains a VLM, the parameters each
reads) are in `search_space.components.EVALUATORS`. Plugins (entry points, see
`search_space.plugins`) bring their own `evaluate`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from search_space import EVALUATORS as DESCRIPTORS
from search_space import Registry, TrialResult

Evaluate = Callable[[Any, Any], TrialResult]  # (TrialConfig, TrialOptions) -> result

EVALUATORS: Registry[Evaluate] = Registry("evaluator")


def _nasbench201(point: Any, options: Any) -> TrialResult:
    from trials.evaluators.nasbench201 import evaluate

    return evaluate(point, options)


def _hpo_table(kind: str) -> Evaluate:
    def evaluate(point: Any, options: Any) -> TrialResult:
        from trials.evaluators.hpo_tables import evaluate

        return evaluate(kind, point)

    return evaluate


def _vlm(point: Any, options: Any) -> TrialResult:
    """Train and evaluate the design as a VLM: data-parallel when the trial's resources have
    several workers (ranks: processes of their own), else in this process."""
    if options.resources.world_size > 1:
        from trials.distributed import train_data_parallel

        return train_data_parallel(point, options)
    from trials.train import train_vlm

    return train_vlm(point, options)


EVALUATORS.register("vlm", _vlm, "a short-budget VLM training run")
EVALUATORS.register("nasbench201", _nasbench201, "NAS-Bench-201 table lookup")
EVALUATORS.register("hpobench", _hpo_table("hpobench"), "HPOBench table lookup")
EVALUATORS.register("hpolib", _hpo_table("hpolib"), "HPOLib table lookup")


def evaluator(name: str) -> Evaluate:
    """The evaluate function of evaluator `name`: a plugin's own, or a built-in one here."""
    return DESCRIPTORS.get(name).evaluate or EVALUATORS.get(name)
