"""A model-based sampler's random start, balanced over categorical choices.

A model (TPE, GP) cannot rate a choice it never saw, and its random start may never draw the one
that matters: on issue 17's planted benchmark (seven expert subsets, 16 trials, five random
draws) seed 1 never tried the best subset at all. `BalancedStartup` runs the first `n` trials
through a random draw whose categorical choices are each the least used so far (ties at random),
so with `n` at least the number of expert subsets every subset is tried once before the model
takes over; continuous and integer parameters are drawn uniformly, as Optuna's RandomSampler
draws them. After the start every call goes to the model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

__all__ = ["BalancedStartup"]

_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


class BalancedStartup(optuna.samplers.BaseSampler):
    """`model` after the first `n` trials (by trial number); a balanced random draw before."""

    def __init__(self, model: optuna.samplers.BaseSampler, n: int, seed: int | None = None) -> None:
        self.model, self.n = model, n
        self._rng = np.random.RandomState(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)

    def _starting(self, trial: FrozenTrial) -> bool:
        return trial.number < self.n

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if self._starting(trial):
            return {}
        return self.model.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if self._starting(trial):
            return {}
        return self.model.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if not self._starting(trial):
            return self.model.sample_independent(study, trial, param_name, param_distribution)
        if isinstance(param_distribution, CategoricalDistribution):
            return self._least_used(study, trial, param_name, param_distribution.choices)
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def _least_used(self, study: optuna.Study, trial: FrozenTrial, name: str,
                    choices: Sequence[Any]) -> Any:
        """A choice drawn by fewer earlier trials than any other (failed ones not counted)."""
        used = Counter(t.params[name] for t in study.get_trials(deepcopy=False, states=_COUNTED)
                       if t.number != trial.number and name in t.params)
        fewest = min(used[c] for c in choices)
        candidates = [c for c in choices if used[c] == fewest]
        return candidates[int(self._rng.randint(len(candidates)))]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.model.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.model.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.model.reseed_rng()
        self._random.reseed_rng()
        self._rng = np.random.RandomState()
