"""MO-ASHA: asynchronous successive halving over several objectives, built once for both
backends (neither Optuna's pruners nor Ray's schedulers rank several objectives).

Rungs sit at min_steps * rf**k below the full budget. When a trial reaches a rung, it continues
only if it is among the best ceil(n / rf) of the n trials recorded at that rung so far (itself
included), ordered by non-dominated rank and, within a rank, by hypervolume contribution.
With one objective this is ASHA's stopping rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from search_space import Objective, hypervolume_contributions, non_dominated_ranks, objective_matrix


def rungs(min_steps: int, reduction_factor: int, max_steps: int) -> list[int]:
    """Steps at which trials are compared (each below the full budget)."""
    out, step = [], min_steps
    while step < max_steps:
        out.append(step)
        step *= reduction_factor
    return out


def order(points: np.ndarray) -> list[int]:
    """Row indices best first: non-dominated rank, then larger hypervolume contribution."""
    ranks = non_dominated_ranks(points)
    keys = np.zeros(len(points))
    for rank in np.unique(ranks):
        members = np.flatnonzero(ranks == rank)
        ref = points.max(axis=0) + 1e-9 + np.abs(points).max(axis=0) * 0.1
        keys[members] = hypervolume_contributions(points[members], ref)
    return sorted(range(len(points)), key=lambda i: (ranks[i], -keys[i]))


class MOASHA:
    """Rung records and the continue/stop decision; state is plain data, easy to persist."""

    def __init__(self, objectives: Sequence[Objective], min_steps: int, reduction_factor: int,
                 max_steps: int) -> None:
        self.objectives = list(objectives)
        self.reduction_factor = reduction_factor
        self.rungs = rungs(min_steps, reduction_factor, max_steps)
        self.records: dict[int, dict[int, dict[str, float]]] = {r: {} for r in self.rungs}

    def record(self, step: int, trial: int, metrics: dict[str, float]) -> None:
        if step in self.records:
            self.records[step][trial] = {o.metric: float(metrics[o.metric]) for o in self.objectives}

    def should_stop(self, step: int, trial: int, metrics: dict[str, float]) -> bool:
        """Record the trial at this rung and say whether it stops here."""
        if step not in self.records:
            return False
        self.record(step, trial, metrics)
        numbers = list(self.records[step])
        matrix = objective_matrix([self.records[step][n] for n in numbers], self.objectives)
        keep = math.ceil(len(numbers) / self.reduction_factor)
        best = [numbers[i] for i in order(matrix)[:keep]]
        return trial not in best
