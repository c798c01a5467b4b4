"""The abstract search backend both drivers subclass: the study state, the rungs and MO-ASHA,
the sampler, and the one rule by which a finished trial is told to an Optuna study (the Optuna
backend's RDB study, or the in-memory one inside Ray's searcher)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from importlib import import_module
from typing import Any

import optuna
from optuna.trial import TrialState

from search_space import EARLY_STOPPING, Registry, Sinks, TrialResult, point_parameters
from trials.search.mo_asha import MOASHA, rungs
from trials.search.samplers import SAMPLERS, drawing_seed
from trials.search.study import SearchSpec, StudyState, max_steps, objective_values, violations

log = logging.getLogger(__name__)
Say = Callable[[str], None]


class SearchBackend(ABC):
    """`prepare()` opens (or refuses) the study, `run()` drives it to `spec.trials` counted
    trials and returns the state. Subclasses say where trials run and how the study is kept."""

    def __init__(self, spec: SearchSpec, sinks: Sinks, say: Say = log.info) -> None:
        self.spec, self.sinks, self.say = spec, sinks, say
        self.state = StudyState(spec, sinks)
        self.steps = max_steps(spec)
        stopping = spec.space.search.early_stopping
        self.stopping = EARLY_STOPPING.get(stopping.kind)
        self.rungs = rungs(stopping.min_steps, stopping.reduction_factor, self.steps) \
            if self.stopping.stops_early else []
        self.moasha = MOASHA(spec.space.objectives, stopping.min_steps, stopping.reduction_factor,
                             self.steps) if self.stopping.mo_asha else None

    @abstractmethod
    def prepare(self) -> None: ...

    @abstractmethod
    def run(self) -> StudyState: ...

    @abstractmethod
    def sampler_study(self) -> optuna.Study:
        """The Optuna study the sampler learns from (what it was told of each trial)."""

    def sampler(self, drawn: int = 0) -> optuna.samplers.BaseSampler:
        """The space's sampler, seeded for a study that already holds `drawn` trials."""
        search = self.spec.space.search
        return SAMPLERS.get(search.sampler)(self.spec.trials, len(self.state.points),
                                            drawing_seed(search.seed, drawn),
                                            len(self.state.compiled.subsets))

    def seed_parameters(self) -> list[dict[str, Any]]:
        """The YAML's seed points as the sampler's parameters (tried first, in order)."""
        return [point_parameters(self.state.compiled, s.model_dump(mode="json", exclude_none=True))
                for s in self.spec.space.search.seed_points]

    def tell(self, study: optuna.Study, trial: optuna.Trial, result: TrialResult) -> None:
        """The one rule: a complete trial is told its objectives (and constraint violations, where
        samplers read them); an infeasible one its analytic values and the worst for the rest;
        an early-stopped one PRUNED; any other failure FAIL, with its reason."""
        space = self.spec.space
        if result.status == "complete" or result.infeasible:
            for i, value in enumerate(violations(space, result.metrics)):
                trial.set_constraint(f"{i}:{space.constraints[i].metric}", value)
            values = objective_values(space, result.metrics, infeasible=result.status != "complete")
            study.tell(trial, values, skip_if_finished=True)
        elif result.status == "pruned":
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            trial.set_user_attr("failure_reason", result.failure.reason if result.failure else "error")
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


IMPLEMENTATIONS: Registry[str] = Registry("backend")  # name -> "module:Class", imported when used
IMPLEMENTATIONS.register("optuna", "trials.search.optuna_backend:OptunaBackend")
IMPLEMENTATIONS.register("ray", "trials.search.ray_backend:RayBackend")


def backend_class(name: str) -> type[SearchBackend]:
    """The backend named in `search.backend` (its module imported only now: Ray is heavy)."""
    module, _, attribute = IMPLEMENTATIONS.get(name).partition(":")
    return getattr(import_module(module), attribute)
