"""`vlmsearch validate`: the study's Pareto front plus its top K designs re-trained at a larger
budget with several seeds, recorded as validation trials (storage `vs_validation_trials`, MLflow
child runs with `vlmsearch.role=validation`), never as search trials.

Budget: `--steps N`, else `--budget-factor F` (default 4) times the design's own train.steps; a
design with `train.stages` keeps each stage's share of the new total (`with_total_steps`). Seeds:
the design's train.seed + 0 .. S-1. Resumable: a (design, seed, steps) complete in the store is not
trained again; one left running (killed) or failed is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dashboard import DEFAULT_TRACKING
from search_space import TrialConfig, TrialResult
from vlmsearch.search import DEFAULT_STORAGE
from vlmsearch.validation_summary import Design, Validation, summarize

DEFAULT_FACTOR = 4.0


class ValidateError(ValueError):
    """Bad input (exit 2): the message names the fix."""


@dataclass(frozen=True)
class ValidateOptions:
    study: str
    top: int = 3
    steps: int | None = None
    budget_factor: float | None = None
    seeds: int = 3
    storage: str = DEFAULT_STORAGE
    tracking: str = DEFAULT_TRACKING
    concurrency: int | None = None  # default: the space's search.concurrency
    run_dir: Path = Path("vlmsearch-runs")
    device: str = "auto"

    def problem(self) -> str | None:
        if self.steps is not None and self.budget_factor is not None:
            return "give --steps N or --budget-factor F, not both"
        checks = ((self.top < 0, "--top must be 0 or more"), (self.seeds < 1, "--seeds must be 1 or more"),
                  (self.steps is not None and self.steps < 1, "--steps must be 1 or more"),
                  (self.budget_factor is not None and not self.budget_factor > 0,
                   "--budget-factor must be above 0, e.g. --budget-factor 4"),
                  (self.concurrency is not None and self.concurrency < 1, "--concurrency must be 1 or more"))
        return next((message for bad, message in checks if bad), None)

    def budget(self, point: TrialConfig) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, round((self.budget_factor or DEFAULT_FACTOR) * point.train.steps))


def validation_point(point: TrialConfig, seed: int, steps: int) -> TrialConfig:
    """`point` trained for `steps` in all (stages scaled) with `seed`."""
    try:
        train = point.train.with_total_steps(steps)
    except ValueError as exc:
        raise ValidateError(f"--steps {steps}: {exc}") from None
    return point.model_copy(update={"train": train.model_copy(update={"seed": seed})})


def choose_designs(store: Any, study: str, options: ValidateOptions) -> tuple[Any, list[Design]]:
    """The study's space and the designs to validate: the front, then the top K by the first
    objective among complete search trials that are not dedup hits (one per config hash)."""
    space = store.space(study)
    if not space.trains_vlm:
        raise ValidateError(f"study '{study}' uses evaluator '{space.evaluator}', which has no training "
                            "budget to raise; validate re-trains VLM designs")
    if not space.objectives:
        raise ValidateError(f"study '{study}' has no objectives to validate")
    complete = [t for t in store.trials(study, status="complete") if t.reused_from is None]
    if not complete:
        raise ValidateError(f"study '{study}' has no complete trials to validate; run (or --resume) "
                            f"its search first")
    best = sorted(complete, key=lambda t: _order(t, space.objectives[0]))
    front = {t.number for t in store.pareto_front(study).trials}
    chosen: dict[str, Any] = {}
    for trial in [t for t in best if t.number in front] + best[:options.top]:
        chosen.setdefault(trial.config_hash, trial)
    designs = []
    for trial in sorted(chosen.values(), key=best.index):
        point = trial.to_result(space.name).config
        designs.append(Design(trial.number, trial.config_hash, point, dict(trial.metrics),
                              trial.number in front, options.budget(point)))
    return space, designs


def _order(trial: Any, objective: Any) -> tuple[bool, float, int]:
    """Best first by `objective`; a trial without its value last."""
    value = float(trial.metrics.get(objective.metric, math.nan))
    sign = -1.0 if objective.direction == "maximize" else 1.0
    return math.isnan(value), sign * value if not math.isnan(value) else 0.0, trial.number


class _Recorder:
    """The PointSink of a validation: the store, MLflow and a line per finished trial."""

    def __init__(self, store: Any, study: str, tracker: Any, designs: dict[str, Design],
                 say: Callable[[str], None], total: int) -> None:
        self.store, self.study, self.tracker, self.designs = store, study, tracker, designs
        self.say, self.total, self.done = say, total, 0
        self.numbers: dict[Any, int] = {}
        self.shown: list[str] = []  # the objectives

    def point_started(self, key: Any, point: TrialConfig) -> None:
        design = self.designs[key.design_hash]
        number = self.store.validation_started(self.study, key, design.number, point)
        self.numbers[key] = number
        if self.tracker is not None:
            self.tracker.trial_started(number, point, {
                "validates": str(design.number), "design_hash": key.design_hash, "seed": str(key.seed),
                "steps": str(key.steps)})

    def point_finished(self, key: Any, result: TrialResult) -> None:
        self.store.validation_finished(self.study, key, result)
        if self.tracker is not None:
            self.tracker.trial_finished(self.numbers[key], result)
        self.done += 1
        design = self.designs[key.design_hash]
        shown = ", ".join(f"{m} {result.metrics[m]:.4g}" for m in self.shown if m in result.metrics)
        what = shown if result.status == "complete" else \
            f"failed ({result.failure.reason if result.failure else '?'})"
        self.say(f"validation {self.done}/{self.total}: #{design.number} {design.label} seed {key.seed}, "
                 f"{key.steps} steps: {what}")


def open_tracker(store: Any, study: str, uri: str, say: Callable[[str], None]) -> Any:
    """The study's MLflow parent run (logged from the store first if MLflow lacks it, as
    `vlmsearch sync` does); None when tracking is off or MLflow fails (said once)."""
    from common import redact_secrets, redact_url
    from dashboard import TRACKING_OFF, ValidationTracker, open_client
    from vlmsearch.sync import sync_study

    if uri.strip().lower() in TRACKING_OFF:
        return None
    try:
        client = open_client(uri)
        tracker = ValidationTracker.find(client, uri, study, say)
        if tracker is None:
            sync_study(store, study, uri)
            tracker = ValidationTracker.find(client, uri, study, say)
        return tracker
    except Exception as exc:
        reason = redact_secrets(f"{type(exc).__name__}: {exc}", uri).splitlines()[0][:300]
        say(f"MLflow at {redact_url(uri)} failed ({reason}); the validation goes on, recorded in the "
            "results store only")
        return None


def validate_study(options: ValidateOptions, say: Callable[[str], None]) -> Validation:
    """Run (or continue) the validation; raises ValidateError / UnknownStudy / StorageError for bad
    input, KeyboardInterrupt (running validation trials marked failed) when interrupted."""
    from storage import ResultsStore, UnknownStudy, ValidationKey, exists

    problem = options.problem()
    if problem:
        raise ValidateError(problem)
    if not exists(options.storage):
        raise UnknownStudy(options.study, [], options.storage)
    with ResultsStore(options.storage, create=False) as store, store.guard():
        store.study_row(options.study)  # UnknownStudy, as `results` says it
        space, designs = choose_designs(store, options.study, options)
        by_hash = {d.config_hash: d for d in designs}
        done = {r.key for r in store.validation_trials(options.study, status="complete")}
        jobs = [(key, validation_point(d.point, key.seed, key.steps)) for d in designs
                for key in (ValidationKey(d.config_hash, d.point.train.seed + i, d.steps)
                            for i in range(options.seeds)) if key not in done]
        if done and jobs:
            say(f"continuing: {len(designs) * options.seeds - len(jobs)} validation trial(s) are complete "
                f"already; training {len(jobs)}")
        tracker = open_tracker(store, options.study, options.tracking, say)
        recorder = _Recorder(store, options.study, tracker, by_hash, say, len(jobs))
        recorder.shown = [o.metric for o in space.objectives]
        _train(store, options, space, jobs, recorder)
        validation = summarize(options.study, space.objectives, designs,
                               store.validation_trials(options.study), options.seeds, options.top)
        validation.trained = len(jobs)
        if tracker is not None:
            _log_summary(tracker, validation)
        return validation


def _train(store: Any, options: ValidateOptions, space: Any, jobs: list, recorder: _Recorder) -> None:
    from trials import train_points

    try:
        train_points(jobs, recorder, cache_dir=options.run_dir / "cache", device=options.device,
                     concurrency=options.concurrency or space.search.concurrency,
                     resources=space.search.resources)
    except KeyboardInterrupt:
        store.validations_interrupted(options.study)
        raise


def _log_summary(tracker: Any, validation: Validation) -> None:
    from dashboard import FidelityDot

    metric = validation.first.metric
    dots = [FidelityDot(f"#{d.design.number}", d.design.search.get(metric, math.nan), d.ci[metric].mean,
                        d.ci[metric].half_width, d.design.front) for d in validation.designs]
    tracker.summary(validation.metrics(), validation.steps, dots, metric)


def run_validation(options: ValidateOptions, format_: str, out: Any, err: Any) -> int:
    """The command: 0 done, 1 a validation trial failed, 2 bad input, 130 interrupted."""
    import json
    import sys

    from storage import StorageError
    from vlmsearch.validate_view import summary_lines, validation_table

    def say(message: str) -> None:
        err.print(message, markup=False)

    try:
        validation = validate_study(options, say)
    except (ValidateError, StorageError) as exc:  # UnknownStudy is a StorageError
        say(str(exc))
        return 2
    except KeyboardInterrupt:
        say(f"interrupted: running validation trials were marked failed; run the same command again "
            f"(`vlmsearch validate --study {options.study} ...`) to continue: complete ones are kept")
        return 130
    if format_ == "json":
        sys.stdout.write(json.dumps(validation.to_json()) + "\n")
    else:
        out.print(validation_table(validation))
        for line in summary_lines(validation):
            out.print(line, markup=False)
    return 1 if validation.failed else 0
