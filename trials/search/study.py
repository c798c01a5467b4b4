"""What both backends share: the study's settings, objective values and constraint violations,
rejection before training, dedup by config hash, and the Pareto front after each trial."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space import (
    SAMPLERS,
    CompiledSpace,
    Failure,
    Front,
    InvalidDesign,
    OptunaDraw,
    SearchSpace,
    Sinks,
    StudyInfo,
    TrialConfig,
    TrialResult,
    UnknownGeometry,
    assess,
    compile_space,
    space_cost_range,
    study_front,
)

DRAW_LIMIT = 50     # known designs drawn in a row before a search stops drawing
ENUMERABLE = 20_000  # a finite space up to this size is enumerated to know when all are drawn


class SearchError(ValueError):
    """A search that cannot start; the message names the problem and the fix."""


@dataclass(frozen=True)
class SearchSpec:
    """Everything a search needs besides its sinks (flags already merged over the YAML)."""

    study: str
    space: SearchSpace
    space_yaml: str
    trials: int
    concurrency: int
    storage: str
    run_dir: Path
    resume: bool = False
    device: str = "auto"
    steps: int | None = None            # override train.steps (tests, quick looks)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> StudyInfo:
        s = self.space.search
        return StudyInfo(self.study, self.space, self.space_yaml,
                         {"backend": s.backend, "sampler": s.sampler, "trials": self.trials,
                          "concurrency": self.concurrency, "early_stopping": s.early_stopping.kind,
                          **self.extra})


def max_steps(spec: SearchSpec) -> int:
    """The longest training budget a trial of this search can have."""

    return spec.steps or spec.space.max_steps()


WORST = {"maximize": 0.0, "minimize": 1e12}  # told for an objective an infeasible point lacks


def objective_values(space: SearchSpace, metrics: dict[str, float], infeasible: bool = False) -> list[float]:
    """The values a sampler is told: those measured; for an infeasible point (refused before
    training), the analytic ones it has and the worst for the rest (both backends tell these)."""
    if not infeasible:
        return [float(metrics[o.metric]) for o in space.objectives]
    return [float(metrics[o.metric]) if o.metric in metrics else WORST[o.direction] for o in space.objectives]


def violations(space: SearchSpace, metrics: dict[str, float]) -> list[float]:
    """Optuna's convention: one value per constraint, <= 0 when satisfied."""
    return [c.violation(metrics[c.metric]) if c.metric in metrics else 0.0 for c in space.constraints]


def rejected_before_training(space: SearchSpace, point: TrialConfig) -> TrialResult | None:
    """A result for a point whose analytic metrics (visual tokens, positions, parameters, the
    resource model's estimates) already break a constraint, or that cannot be built or trained
    at all on its device; None when the point should be trained."""
    try:
        metrics, problems = assess(point, space.search.resources)
    except InvalidDesign as exc:
        return TrialResult(point, "failed", 0, failure=Failure("invalid", str(exc)))
    except UnknownGeometry:
        return None
    if problems:
        return TrialResult(point, "failed", 0, metrics=metrics,
                           failure=Failure("invalid", "cannot train: " + "; ".join(m for _, m in problems)))
    broken = [c for c in space.constraints if c.metric in metrics and not c.satisfied(metrics[c.metric])]
    if not broken:
        return None
    shown = ", ".join(f"{c.metric} = {metrics[c.metric]:g} breaks {c.metric} <= {c.max:g}"
                      if c.max is not None else f"{c.metric} = {metrics[c.metric]:g} is below {c.min:g}"
                      for c in broken)
    return TrialResult(point, "failed", 0, metrics=metrics,
                       failure=Failure("invalid", f"infeasible before training: {shown}", infeasible=True))


class StudyState:
    """The driver's view of a study: finished results, dedup index, front; informs the sinks."""

    def __init__(self, spec: SearchSpec, sinks: Sinks) -> None:
        self.spec, self.sinks = spec, sinks
        self.compiled: CompiledSpace = compile_space(spec.space)
        self.results: dict[int, TrialResult] = {}
        self.bounds = space_cost_range(self.compiled).reference_bounds()
        self.front = Front({}, 0.0, 0)
        grid = SAMPLERS.get(spec.space.search.sampler).needs_finite_space
        self.points: list[TrialConfig] = list(self.compiled.points()) if grid else []
        self.repeats = 0  # designs the study had, drawn in a row
        self._designs: int | None = len({p.config_hash for p in self.points}) if grid else None

    def sample(self, trial: Any) -> TrialConfig:
        """The sampler's next design: under the grid sampler an index into every point of the
        space (Optuna's grid is over parameter `point`), else define-by-run."""
        if self.points:
            return self.points[trial.suggest_categorical("point", list(range(len(self.points))))]
        return self.compiled.sample(OptunaDraw(trial))

    def completed_with(self, config_hash: str) -> TrialResult | None:
        return next((r for r in self.results.values()
                     if r.status == "complete" and r.config_hash == config_hash), None)

    def settled_before_training(self, point: TrialConfig, number: int) -> TrialResult | None:
        """The result of a point that needs no training: rejected (infeasible or impossible), or
        already completed in this study (its result reused). None: train it."""
        settled = rejected_before_training(self.spec.space, point)
        previous = self.completed_with(point.config_hash) if settled is None else None
        self.repeats = self.repeats + 1 if previous is not None else 0
        if previous is not None:
            settled = TrialResult(point, "complete", previous.steps, dict(previous.metrics),
                                  reused_from=previous.number)
        if settled is not None:
            settled.study, settled.number = self.spec.study, number
        return settled

    def designs(self) -> int | None:
        """Distinct designs of the space (config hashes), where it is finite and small enough to
        enumerate; None otherwise. Counted once, at the first repeat."""
        if self._designs is None:
            size = self.compiled.size()
            if size is None or size > ENUMERABLE:
                self._designs = -1
            else:
                self._designs = len({p.config_hash for p in (self.points or self.compiled.points())})
        return None if self._designs < 0 else self._designs

    def exhausted(self) -> str | None:
        """Why the search draws no more (None: it goes on): the study has every design of the
        space, or the sampler drew only designs the study had, DRAW_LIMIT times in a row."""
        if not self.repeats and self._designs is None:  # counted at the first repeat, not before
            return None
        designs, seen = self.designs(), len({r.config_hash for r in self.results.values()})
        if designs is not None and seen >= designs:
            return (f"every design of the space is in study '{self.spec.study}' ({designs}): the search "
                    "stops short of its trial count")
        if self.repeats >= DRAW_LIMIT:
            return (f"the sampler drew {self.repeats} designs in a row that study '{self.spec.study}' "
                    "already has: the search stops short of its trial count")
        return None

    def finish(self, result: TrialResult) -> None:
        """Record a finished trial, recompute the front, tell the sinks."""
        self.results[result.number or 0] = result
        self.recompute()
        self.sinks.trial_finished(self.spec.study, result)
        self.sinks.front_updated(self.spec.study, self.front)

    def recompute(self) -> None:
        numbers = sorted(n for n, r in self.results.items()  # a repeat is on it as its original
                         if r.status == "complete" and r.reused_from is None)
        rows = [self.results[n].metrics for n in numbers]
        ranks, volume = study_front(rows, self.spec.space.objectives, self.spec.space.constraints,
                                    self.bounds)
        by_number = dict(zip(numbers, ranks, strict=True))
        for number, result in self.results.items():
            result.pareto_rank = by_number.get(number)
        self.front = Front(by_number, volume, len(self.results))
