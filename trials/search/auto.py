"""The `auto` sampler: chooses its model by the space the study has drawn so far.

Flat (every trial so far drew the same parameters: a table's grid, a VLM space without an
expert pool or conditional fusion) -> FlatBO (trials/search/flat_bo.py: GPs and EHVI over untried
candidates; on NAS-Bench-201 CIFAR-10, 95% of the true hypervolume in a median of 50 trials, 10
of 10 seeds, where TPE took 107 on 7 of 10: docs/BENCHMARKS.md).
Conditional (an expert pool: each subset draws its own experts' parameters, each fusion kind its
own) -> vlmsearch's TPE, multivariate and grouped, which models each conditional group, as
`sampler: tpe` does. The choice is made per trial and kept for its every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from trials.search.flat_bo import is_flat

__all__ = ["AutoSampler"]


class AutoSampler(optuna.samplers.BaseSampler):
    """`flat` where the space is flat, `conditional` otherwise (see the module)."""

    def __init__(self, flat: optuna.samplers.BaseSampler, conditional: optuna.samplers.BaseSampler) -> None:
        self.flat, self.conditional = flat, conditional  # (the registry's: trials/search/samplers.py)
        self._chosen: dict[int, optuna.samplers.BaseSampler] = {}

    def model_for(self, study: optuna.Study) -> optuna.samplers.BaseSampler:
        # every trial that drew its parameters, whatever became of it: with MO-ASHA most are
        # pruned, and two complete ones of the same subset and fusion do not make a space flat
        drawn = [t for t in study.get_trials(deepcopy=False) if t.distributions]
        complete = [t for t in drawn if t.state == TrialState.COMPLETE]
        return self.flat if complete and is_flat(drawn) else self.conditional

    def _of(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        return self._chosen.get(trial.number, self.conditional)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        self._chosen[trial.number] = self.model_for(study)
        return self._of(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._of(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._of(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.flat.before_trial(study, trial)
        self.conditional.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._chosen.pop(trial.number, None)
        self.flat.after_trial(study, trial, state, values)
        self.conditional.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.flat.reseed_rng()
        self.conditional.reseed_rng()
