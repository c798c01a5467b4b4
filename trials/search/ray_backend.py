"""The Ray Tune backend: the same define-by-run space and Optuna sampler, trials as Ray tasks.

A `Tuner` runs the trainable with `search.resources` per trial (fractional GPUs allowed) and
`max_concurrent_trials = concurrency`, locally or on a cluster (`--ray-address`). Early stopping
is a scheduler (MO-ASHA, ASHA, async Hyperband); results reach the sinks through a Tune callback
in the driver. A trial whose worker dies is retried once (`FailureConfig(max_failures=1)`).
A data-parallel trial (`search.resources.world_size` > 1) runs a Ray Train trainer of that many
workers, which hold the trial's resources (`trials.search.ray_train`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy output honours verbose=0
# A failed trial reports no objective values; the searcher below tells Optuna FAIL for it.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from common import redact_url
from search_space import Failure, Registry, Resources, Sinks, TrialConfig, TrialResult, result_from_json
from trials.search.backend import SearchBackend
from trials.search.mo_asha import MOASHA
from trials.search.study import SearchError, SearchSpec, StudyState

log = logging.getLogger(__name__)
STATUS, RESULT, NUMBER, POINT, SETTLED = "vlm_status", "vlm_result", "__number", "__point", "__settled"
_LIVE: dict[str, RayBackend] = {}  # study -> its backend in this driver; Ray pickles only the key


def _transport(result: TrialResult) -> str:
    """A result as JSON for the trip from a worker (or the driver's define) to the callback."""
    return json.dumps(result.to_json())


_CACHES: dict[Path, Any] = {}  # one feature cache per folder in a worker process, kept across trials


def _cache(folder: Path) -> Any:
    """The feature cache under `folder`: its memory part serves every trial of this (reused)
    worker process."""
    from trials import FeatureCache

    if folder not in _CACHES:
        _CACHES[folder] = FeatureCache(folder)
    return _CACHES[folder]


def _trainable(config: dict[str, Any]) -> None:
    """One trial on a Ray worker: reports at rungs, then the final result."""
    from trials.outcome import TrialOptions, run_trial

    if config.get(SETTLED):  # decided in the driver: a duplicate or an infeasible point
        settled = json.loads(config[SETTLED])
        tune.report({**settled["metrics"], "step": settled["steps"], STATUS: settled["status"],
                     RESULT: config[SETTLED]})
        return
    point = TrialConfig.model_validate_json(config[POINT])
    extra: dict[str, str] = {}  # a data-parallel trial's Train placement group, for the driver

    def report(step: int, metrics: dict[str, float]) -> bool:
        tune.report({**metrics, **extra, "step": step, STATUS: "running"})
        return False  # the scheduler stops a trial from outside

    cache = _cache(Path(config["__run_dir"]) / "cache") if point.trains_vlm else None
    options = TrialOptions(cache=cache, report=report, device=config["__device"],
                           steps=config.get("__steps"), report_at=frozenset(config["__report_at"]),
                           resources=Resources.model_validate_json(config["__resources"]))
    if _data_parallel(point, options.resources):  # a Ray Train trainer inside this trial
        from trials.search.ray_train import train_on_ray

        result = train_on_ray(point, options, Path(config["__run_dir"]) / "ray" / "train", extra)
    else:
        result = run_trial(point, options)
    result.number = config[NUMBER]
    node = result.host or ray.get_runtime_context().get_node_id()  # rank 0's node
    tune.report({**result.metrics, **extra, "step": result.steps, STATUS: result.status, "node": node,
                 RESULT: _transport(result)})


def _data_parallel(point: TrialConfig | None, resources: Resources) -> bool:
    return resources.world_size > 1 and (point is None or point.trains_vlm)


class _Searcher(OptunaSearch):
    """Optuna's searcher, ending the search when the backend has its trials (dedup hits do not
    count), telling results by the backend's one rule (Ray's own tells COMPLETE with the last
    partial values), and drawing new designs after a restore (not the pickled sampler's)."""

    def __init__(self, key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.key = key
        self.configs: dict[str, dict[str, Any]] = {}  # Tune trial id -> its config, until told

    def suggest(self, trial_id: str) -> dict | str | None:
        backend = _LIVE[self.key]
        if backend.drawn_enough():
            return Searcher.FINISHED
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            self.configs[trial_id] = config
            backend.live[trial_id] = _counts(config)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        backend, last = _LIVE[self.key], result or {}
        backend.live.pop(trial_id, None)
        config = self.configs.pop(trial_id, None) or last.get("config") or {}
        if error or (RESULT not in last and POINT not in config):
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.FAIL)
        else:
            backend.tell(self._ot_study, self._ot_trials[trial_id], backend.result_of(config, last))
        self._completed_trials.add(trial_id)

    def restore(self, checkpoint_path: str) -> None:
        """A restored experiment: its unfinished trials (Tune runs them again) count as running,
        and the sampler is seeded anew for the trials the study holds."""
        super().restore(checkpoint_path)
        backend = _LIVE[self.key]
        self._ot_study.sampler = backend.sampler(drawn=len(self._ot_study.trials))
        backend.live = {trial_id: _counts(config) for trial_id, config in self.configs.items()}


def _counts(config: dict[str, Any]) -> bool:
    """Whether a trial counts against --trials: all do but a dedup hit (settled as a repeat)."""
    return SETTLED not in config or json.loads(config[SETTLED])["reused_from"] is None


class _Define:
    """The define-by-run function Ray keeps (and pickles): a key to the live backend."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, trial: Any) -> dict[str, Any]:
        return _LIVE[self.key].define(trial)


class MOASHAScheduler(FIFOScheduler):
    """MO-ASHA (trials/search/mo_asha.py) as a Ray Tune scheduler: stops at a rung."""

    def __init__(self, moasha: MOASHA) -> None:
        super().__init__()
        self.moasha = moasha
        self.numbers: dict[str, int] = {}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if result.get(STATUS) != "running":
            return TrialScheduler.CONTINUE
        number = self.numbers.setdefault(trial.trial_id, len(self.numbers))
        stop = self.moasha.should_stop(int(result["step"]), number, result)
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE


SchedulerFactory = Callable[["RayBackend"], TrialScheduler]
SCHEDULERS: Registry[SchedulerFactory] = Registry("early stopping")
SCHEDULERS.register("none", lambda backend: FIFOScheduler())
SCHEDULERS.register("mo_asha", lambda backend: MOASHAScheduler(backend.moasha))
for _kind, _brackets in (("asha", 1), ("hyperband", 3)):
    SCHEDULERS.register(_kind, lambda backend, b=_brackets: _async_hyperband(backend, b))


def _async_hyperband(backend: RayBackend, brackets: int) -> TrialScheduler:
    """Ray's async successive halving on the first objective (1 bracket: ASHA)."""
    stopping, first = backend.spec.space.search.early_stopping, backend.spec.space.objectives[0]
    return AsyncHyperBandScheduler(time_attr="step", metric=first.metric, max_t=backend.steps,
                                   mode="max" if first.direction == "maximize" else "min",
                                   grace_period=stopping.min_steps,
                                   reduction_factor=stopping.reduction_factor, brackets=brackets)


def _last_line(path: str | None) -> str:
    """The error's own line (the end of the traceback Ray saved), or where to look."""
    try:
        lines = [line for line in Path(path or "").read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError:
        return path or "no error file"
    return lines[-1].strip()[:500] if lines else str(path)


class _OneLineTrialErrors(logging.Filter):
    """Ray Tune logs a failed trial task with its traceback; say it in one line (the failure is
    recorded with the trial, and Ray retries it once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and str(record.msg).startswith("Trial task failed"):
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__} (Ray retries it once)"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


class _SinkCallback(tune.Callback):
    """Tune events -> the study state and the sinks (runs in the driver; pickled as its key)."""

    def __init__(self, key: str) -> None:
        self.key = key

    @property
    def backend(self) -> RayBackend:
        return _LIVE[self.key]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        point = TrialConfig.model_validate_json(trial.config[POINT])
        self.backend.sinks.trial_started(self.backend.spec.study, trial.config[NUMBER], point)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(STATUS) == "running":
            self.backend.sinks.trial_intermediate(self.backend.spec.study, trial.config[NUMBER],
                                                  int(result["step"]), _numbers(result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        _release(trial)
        self.backend.finish(trial, trial.last_result or {})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        _release(trial)
        point = TrialConfig.model_validate_json(trial.config[POINT])
        message = f"the Ray worker failed {trial.num_failures} times: {_last_line(trial.error_file)}"
        failed = TrialResult(point, "failed", int((trial.last_result or {}).get("step", 0)),
                             failure=Failure("error", message))
        self.backend.record(trial.config[NUMBER], failed)


def _release(trial: Any) -> None:
    """A data-parallel trial's Ray Train workers, if still there (stopped by the scheduler)."""
    raw = trial.config.get("__resources")  # (absent in experiments from before it was passed)
    if raw and _data_parallel(None, Resources.model_validate_json(raw)):
        from trials.search.ray_train import release_group

        release_group(trial.last_result or {})


class RayBackend(SearchBackend):
    """A Tune experiment per study, kept under the run folder in a folder of its results
    store (`ray/<store>/<study>`: two stores never share an experiment)."""

    def __init__(self, spec: SearchSpec, sinks: Sinks, say: Callable[[str], None] = log.info) -> None:
        super().__init__(spec, sinks, say)
        store = hashlib.sha256(redact_url(spec.storage).encode()).hexdigest()[:12]
        self.path = (spec.run_dir / "ray" / store).resolve()
        self.live: dict[str, bool] = {}  # Tune trial id -> counts against --trials (not a dedup hit)
        _LIVE[spec.study] = self

    def prepare(self) -> None:
        experiment = self.path / self.spec.study
        if experiment.exists() and not self.spec.resume:
            raise SearchError(f"study '{self.spec.study}' already ran under {experiment}; add "
                              "--resume to continue it, or name a new study with --study")
        self.restoring = experiment.exists() and tune.Tuner.can_restore(str(experiment))
        if self.spec.resume and not experiment.exists():
            self.say(f"--resume: study '{self.spec.study}' has not run under {experiment} yet, so it "
                     "starts now (check --study and --run-dir if you meant an earlier one)")

    def drawn_enough(self) -> bool:
        """Whether the search has its trials (finished or running, dedup hits not counted), or
        the space has no design left to draw (said once)."""
        counted = sum(r.reused_from is None for r in self.state.results.values()) + sum(self.live.values())
        why = self.state.exhausted()
        if why and not self.live:
            self.say(why)
        return counted >= self.spec.trials or (why is not None and not self.live)

    def define(self, trial: Any) -> dict[str, Any]:
        """Define-by-run: sample a point; settle duplicates and infeasible points here."""
        point = self.state.sample(trial)
        config = {POINT: point.model_dump_json(), NUMBER: trial.number,
                  "__run_dir": str(self.spec.run_dir.resolve()), "__device": self.spec.device,
                  "__steps": self.spec.steps, "__report_at": self.rungs,
                  "__resources": self.spec.space.search.resources.model_dump_json()}
        settled = self.state.settled_before_training(point, trial.number)
        if settled is not None:
            config[SETTLED] = _transport(settled)
        return config

    def finish(self, trial: Any, last: dict[str, Any]) -> None:
        self.record(trial.config[NUMBER], self.result_of(trial.config, last))

    def result_of(self, config: dict[str, Any], last: dict[str, Any]) -> TrialResult:
        """A finished trial's result from its last report (a final one, or a rung's)."""
        if RESULT in last:
            result = result_from_json(json.loads(last[RESULT]), self.spec.space.name)
        else:  # stopped by the scheduler at a rung
            point = TrialConfig.model_validate_json(config[POINT])
            result = TrialResult(point, "pruned", int(last.get("step", 0)), _numbers(last))
        result.host = result.host or last.get("node")
        return result

    def record(self, number: int, result: TrialResult) -> None:
        result.study, result.number = self.spec.study, number
        self.ledger.parent.mkdir(parents=True, exist_ok=True)
        with self.ledger.open("a", encoding="utf-8") as handle:
            handle.write(_transport(result) + "\n")
        self.state.finish(result)

    def run(self) -> StudyState:
        address = self.spec.extra.get("ray_address")
        if not ray.is_initialized():
            cpus = None if address else max(2, os.cpu_count() or 2)
            ray.init(address=address or "local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True, logging_level=logging.WARNING)
        logging.getLogger("ray.tune").setLevel(logging.WARNING)
        controller = logging.getLogger("ray.tune.execution.tune_controller")
        if not any(isinstance(f, _OneLineTrialErrors) for f in controller.filters):
            controller.addFilter(_OneLineTrialErrors())
        self.warn_if_too_small()
        self.sinks.study_started(self.spec.info)
        tuner = self.tuner()
        if self.restoring:
            self.load_history()
        tuner.fit()
        counted = sum(r.reused_from is None for r in self.state.results.values())
        if counted < self.spec.trials and not self.state.exhausted():
            # Ray catches Ctrl-C itself, saves the experiment and returns early
            raise KeyboardInterrupt
        return self.state

    def sampler_study(self) -> optuna.Study:
        return self.searcher._ot_study  # the searcher's in-memory study

    def warn_if_too_small(self) -> None:
        """Ray Train waits for a data-parallel trial's resources without end (an autoscaler may
        bring them); say so when the cluster as it is cannot hold one trial."""
        resources = self.spec.space.search.resources
        if not (self.spec.space.trains_vlm and _data_parallel(None, resources)):
            return
        total = ray.cluster_resources()
        if total.get("CPU", 0) < resources.cpu or total.get("GPU", 0) < resources.gpu:
            self.say(f"each trial needs {resources.cpu:g} CPUs and {resources.gpu:g} GPUs for its "
                     f"{resources.world_size} workers; this cluster has {total.get('CPU', 0):g} and "
                     f"{total.get('GPU', 0):g}: trials wait until nodes join")

    @property
    def ledger(self) -> Path:
        """The driver's own record of finished trials (Ray's results cannot tell an interrupted
        trial from one its scheduler stopped)."""
        return self.path / self.spec.study / "vlmsearch_results.jsonl"

    def load_history(self) -> None:
        """Trials a restored experiment finished before: into the state and the sinks."""
        if not self.ledger.exists():
            return
        for line in self.ledger.read_text(encoding="utf-8").splitlines():
            try:
                data = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            self.state.finish(result_from_json(data, self.spec.space.name))

    def tuner(self) -> tune.Tuner:
        space, search = self.spec.space, self.spec.space.search
        seeds = self.seed_parameters()
        self.searcher = searcher = _Searcher(self.spec.study, space=_Define(self.spec.study),
                             metric=[o.metric for o in space.objectives],
                             mode=["max" if o.direction == "maximize" else "min" for o in space.objectives],
                             sampler=self.sampler(), points_to_evaluate=seeds or None)
        resources = {"cpu": search.resources.cpu, "gpu": search.resources.gpu}
        if space.trains_vlm and _data_parallel(None, search.resources):
            # the trial only waits: its Ray Train workers hold the resources (Tune refuses an
            # empty request, and any CPU share of its own could keep whole-node trials from packing)
            resources = {"cpu": 0, "gpu": 0, "memory": 1}
        trainable = tune.with_resources(_trainable, resources)
        run_config = tune.RunConfig(name=self.spec.study, storage_path=str(self.path), verbose=0,
                                    failure_config=tune.FailureConfig(max_failures=1),
                                    callbacks=[_SinkCallback(self.spec.study)])
        if self.restoring:
            return tune.Tuner.restore(str(self.path / self.spec.study), trainable, resume_errored=True)
        scheduler = SCHEDULERS.get(search.early_stopping.kind)(self)
        tune_config = tune.TuneConfig(search_alg=searcher, num_samples=-1,  # the searcher ends it
                                      max_concurrent_trials=self.spec.concurrency, scheduler=scheduler,
                                      reuse_actors=True)  # one worker process runs trial after trial
        return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def _numbers(result: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of a Tune result (its bookkeeping keys left out)."""
    skip = {"step", "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "pid",
            "time_since_restore", "iterations_since_restore"}
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float)
            and not isinstance(v, bool) and k not in skip and not k.startswith("_")}

