"""Peers outside Optuna for bench/nasbench_search.py, each through its own ask/tell interface
with its own defaults, wrapped as an Optuna sampler so that every method goes through
vlmsearch's space and evaluator path: the wrapper asks the peer for a whole configuration
(`sample_relative`) and tells it the trial's objective values, minimised (`after_trial`).

- `smac`: SMAC3's HyperparameterOptimizationFacade (random forest, Sobol initial design),
  multi-objective by ParEGO (`smac.multi_objective.parego.ParEGO`), deterministic.
- `morea`: Syne Tune's multi-objective regularized evolution (population 100, sample 10: its
  first 100 trials are random draws).
- HEBO would not install here: hebo 0.3.6 pins numpy<1.25 and pymoo==0.6.0 (this project runs
  numpy 2.x), so it is not a method.

`pip install -c constraints/cpu.txt -r bench/requirements-peers.txt` installs the versions measured.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

Space = dict[str, BaseDistribution]


class AskTell(optuna.samplers.BaseSampler):
    """An Optuna sampler driven by a peer's ask (-> params) and tell (params, minimised values)."""

    def __init__(self, space: Space, directions: Sequence[str], ask: Callable[[], dict[str, Any]],
                 tell: Callable[[Any, list[float]], None]) -> None:
        self.space, self._ask, self._tell = space, ask, tell
        self.signs = [-1.0 if d == "maximize" else 1.0 for d in directions]
        self._pending: dict[int, Any] = {}  # trial number -> the peer's handle of its config
        self._random = optuna.samplers.RandomSampler(seed=0)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> Space:
        return self.space

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: Space) -> dict[str, Any]:
        handle, params = self._ask()
        self._pending[trial.number] = handle
        return params

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, name: str,
                           distribution: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, name, distribution)  # (none: all relative)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        handle = self._pending.pop(trial.number, None)
        if handle is not None and values is not None:
            self._tell(handle, [s * v for s, v in zip(self.signs, values, strict=True)])


def _smac(space: Space, directions: Sequence[str], seed: int, trials: int) -> AskTell:
    from ConfigSpace import (
        CategoricalHyperparameter,
        ConfigurationSpace,
        UniformFloatHyperparameter,
        UniformIntegerHyperparameter,
    )
    from smac import HyperparameterOptimizationFacade, Scenario
    from smac.multi_objective.parego import ParEGO
    from smac.runhistory.dataclasses import TrialValue

    def hyperparameter(name: str, d: BaseDistribution) -> Any:
        if isinstance(d, CategoricalDistribution):
            return CategoricalHyperparameter(name, list(d.choices))
        if isinstance(d, IntDistribution):
            return UniformIntegerHyperparameter(name, d.low, d.high, log=d.log)
        return UniformFloatHyperparameter(name, d.low, d.high, log=d.log)

    cs = ConfigurationSpace(seed=seed)
    cs.add([hyperparameter(n, d) for n, d in space.items()])
    objectives = [f"objective{i}" for i in range(len(directions))]
    scenario = Scenario(cs, objectives=objectives, deterministic=True, n_trials=trials, seed=seed,
                        output_directory=tempfile.mkdtemp(prefix="smac-"))
    smac = HyperparameterOptimizationFacade(
        scenario, lambda config, seed=0: [0.0] * len(objectives),  # never called: ask/tell only
        multi_objective_algorithm=ParEGO(scenario), overwrite=True, logging_level=40)

    def ask() -> tuple[Any, dict[str, Any]]:
        info = smac.ask()
        return info, _values(space, dict(info.config))

    return AskTell(space, directions, ask, lambda info, costs: smac.tell(info, TrialValue(cost=costs)))


def _morea(space: Space, directions: Sequence[str], seed: int, trials: int) -> AskTell:
    from syne_tune import config_space as st
    from syne_tune.optimizer.schedulers.multiobjective.multi_objective_regularized_evolution import (
        MultiObjectiveRegularizedEvolution,
    )

    def domain(d: BaseDistribution) -> Any:
        if isinstance(d, CategoricalDistribution):
            return st.choice(list(d.choices))
        if isinstance(d, IntDistribution):
            return (st.lograndint if d.log else st.randint)(d.low, d.high)
        return (st.loguniform if d.log else st.uniform)(d.low, d.high)

    searcher = MultiObjectiveRegularizedEvolution({n: domain(d) for n, d in space.items()}, random_seed=seed)
    count = iter(range(10**9))

    def ask() -> tuple[Any, dict[str, Any]]:
        config = searcher.suggest()
        return (next(count), config), _values(space, config)

    return AskTell(space, directions, ask,
                   lambda handle, costs: searcher.on_trial_complete(handle[0], handle[1], costs))


def _values(space: Space, config: dict[str, Any]) -> dict[str, Any]:
    """A peer's configuration as the distributions' own values (numpy scalars -> Python)."""
    out = {}
    for name, d in space.items():
        value = config[name]
        if isinstance(d, IntDistribution):
            value = int(value)
        elif isinstance(d, FloatDistribution):
            value = float(value)
        elif not isinstance(value, str):
            value = next(c for c in d.choices if c == value)
        out[name] = value
    return out


PEERS: dict[str, tuple[str, Callable[[Space, Sequence[str], int, int], AskTell]]] = {
    "smac": ("smac", _smac), "morea": ("syne-tune", _morea)}


def peer_sampler(method: str, space: Space, directions: Sequence[str], seed: int, trials: int) -> AskTell:
    return PEERS[method][1](space, directions, seed, trials)


def version(method: str) -> str:
    """The installed version of a peer's package (`-` where it is not installed)."""
    try:
        return f"{PEERS[method][0]} {importlib.metadata.version(PEERS[method][0])}"
    except importlib.metadata.PackageNotFoundError:
        return "-"
