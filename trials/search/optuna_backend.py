"""The Optuna backend: an ask/tell loop over an RDB study, trials in worker processes.

The study lives in the SQL database (`--storage`), so a killed driver loses nothing: finished
trials keep their full result in user attributes; running ones keep a heartbeat and their
search's `host:pid`, and on `--resume` those of a dead search are failed and queued again (or
told, when the result was recorded just before the search died: see `fail_dead`).
"""

from __future__ import annotations

import datetime
import logging
import multiprocessing as mp
import queue
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.managers import SyncManager
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from search_space.locks import one_at_a_time, sqlite_path
from search_space.point import TrialConfig
from search_space.recorder import STOPPED, recorder_alive, recorder_gone, recorder_id
from search_space.registry import Registry
from search_space.result import Failure, TrialResult, result_from_json
from search_space.retry import Backoff
from trials.search.mo_asha import MOASHA, rungs
from trials.search.sinks import Sinks
from trials.search.study import (
    SearchError,
    SearchSpec,
    StudyState,
    max_steps,
    objective_values,
    violations,
)
from trials.search.worker import ignore_ctrl_c, init_worker, run_one

log = logging.getLogger(__name__)
HEARTBEAT_S, GRACE_S = 5, 20
RECORDER = "vlmsearch:recorded_by"  # host:pid of the search running a trial (a system attr)
RESULT, INTERRUPTED = "result", "interrupted"
TERMINAL = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _recorded(frozen: FrozenTrial) -> bool:
    """A finished trial whose result counts (not one an interrupted search queued again)."""
    return RESULT in frozen.user_attrs and not frozen.user_attrs.get(INTERRUPTED)


warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
optuna.logging.set_verbosity(optuna.logging.WARNING)


# (spec, the grid's size, the seed) -> sampler
SamplerFactory = Callable[[SearchSpec, int, "int | None"], optuna.samplers.BaseSampler]
SAMPLERS: Registry[SamplerFactory] = Registry("sampler")
SAMPLERS.register("tpe", lambda s, _, seed: optuna.samplers.TPESampler(
    seed=seed, multivariate=True, group=True, constant_liar=True,
    n_startup_trials=min(10, max(2, s.trials // 3))),
    "TPE (multivariate, grouped for conditional parameters)")
SAMPLERS.register("nsga2", lambda s, _, seed: optuna.samplers.NSGAIISampler(
    seed=seed, population_size=max(4, min(50, s.trials // 3))), "NSGA-II")
SAMPLERS.register("random", lambda s, _, seed: optuna.samplers.RandomSampler(seed=seed), "uniform random")
SAMPLERS.register("gp", lambda s, _, seed: optuna.samplers.GPSampler(
    seed=seed, n_startup_trials=min(10, max(2, s.trials // 3))), "Gaussian process")


def drawing_seed(seed: int | None, drawn: int) -> int | None:
    """The sampler's seed once the study holds `drawn` trials: the search's own seed at the start
    (a search stays reproducible), another one derived from it on a resume, so a resumed search
    does not draw its first designs again."""
    return None if seed is None else (seed + drawn * 0x9E3779B1) % 2**32


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its `study.stop()` once the grid is used up: that raises
    outside `optimize` (this driver asks and tells), and the driver stops by its own count."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        return None


SAMPLERS.register("grid", lambda s, size, seed: _GridSampler(
    {"point": list(range(size))}, seed=seed), "every point of a finite space")


@dataclass
class _Running:
    trial: optuna.Trial
    point: TrialConfig
    reply: Any


class OptunaBackend:
    """`run()` drives the search to `spec.trials` finished trials; returns the study state."""

    def __init__(self, spec: SearchSpec, sinks: Sinks, say: Callable[[str], None] = log.info) -> None:
        self.spec, self.sinks, self.say = spec, sinks, say
        self.state = StudyState(spec, sinks)
        self.db = Backoff(f"the study's database ({_safe(spec.storage)})", say)
        self.stopped: list[TrialResult] = []  # trials of a dead search, failed, for the sinks
        stopping = spec.space.search.early_stopping
        steps = max_steps(spec)
        self.rungs = rungs(stopping.min_steps, stopping.reduction_factor, steps) \
            if stopping.kind != "none" else []
        self.moasha = MOASHA(spec.space.objectives, stopping.min_steps, stopping.reduction_factor,
                             steps) if stopping.kind == "mo_asha" else None

    # ---- the study --------------------------------------------------------------------------

    def open_study(self) -> optuna.Study:
        spec = self.spec
        with one_at_a_time(sqlite_path(spec.storage)):  # a new SQLite file: one creator at a time
            storage = _rdb_storage(spec.storage)
            study, created = self.create_or_load(storage)
            if created:
                study.set_metric_names([o.metric for o in spec.space.objectives])  # optuna-dashboard
                study.set_user_attr("space", self.design_of_space())
                study.set_user_attr("space_yaml", spec.space_yaml)
                self.enqueue_seeds(study)
        if created and spec.resume:
            self.say(f"--resume: study '{spec.study}' is not in {_safe(spec.storage)} yet, so it starts "
                     "now (check --study and --storage if you meant an earlier one)")
        if not created:
            self.check_resumable(study)
            drawn = len(study.get_trials(deepcopy=False))
            if drawn:  # resumed (or joined): draws that continue, not repeat, the earlier ones
                study.sampler = self.sampler(drawn)
        return study

    def sampler(self, drawn: int) -> optuna.samplers.BaseSampler:
        search = self.spec.space.search
        seed = drawing_seed(search.seed, drawn)
        return SAMPLERS.get(search.sampler)(self.spec, len(self.state.points), seed)

    def create_or_load(self, storage: RDBStorage) -> tuple[optuna.Study, bool]:
        """The study, and whether this search created it: of two searches starting it at once,
        exactly one creates it (the database refuses the second name) and seeds it."""
        spec = self.spec
        options: dict[str, Any] = dict(
            storage=storage, study_name=spec.study, pruner=_pruner(spec),
            sampler=self.sampler(drawn=0))
        try:
            directions = [o.direction for o in spec.space.objectives]
            return optuna.create_study(directions=directions, **options), True
        except optuna.exceptions.DuplicatedStudyError:
            return optuna.load_study(**options), False

    def design_of_space(self) -> dict[str, Any]:
        dump = self.spec.space.model_dump(mode="json")
        keys = ("data", "language_model", "experts", "fusion", "projector", "positions", "train",
                "objectives", "constraints")
        if not self.spec.space.trains_vlm:  # (absent for a VLM: studies made before keep matching)
            keys = ("evaluator", "parameters", "objectives", "constraints")
        return {k: dump[k] for k in keys}

    def check_resumable(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        if trials and not self.spec.resume:
            raise SearchError(f"study '{self.spec.study}' already has {len(trials)} trials in "
                              f"{_safe(self.spec.storage)}; add --resume to continue it, or name a "
                              "new study with --study")
        if study.user_attrs.get("space") not in (None, self.design_of_space()):
            raise SearchError(f"study '{self.spec.study}' was started with a different space; "
                              "resume it with its own YAML, or name a new study with --study")
        self.wait_for_stale(study)

    def wait_for_stale(self, study: optuna.Study) -> None:
        """Fail (and so retry) trials left running by a killed search; those of a live search on
        this host are shared at once, those of another host once they go stale or come back."""
        deadline = time.time() + GRACE_S + 2 * HEARTBEAT_S
        while True:
            self.fail_dead(study)
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            unknown = [t for t in running if not recorder_alive(t.system_attrs.get(RECORDER))]
            if not unknown or time.time() > deadline:
                return
            self.say(f"waiting for {len(unknown)} trial(s) of an earlier search to go stale "
                     f"(up to {GRACE_S} s) ...")
            time.sleep(HEARTBEAT_S)

    def fail_dead(self, study: optuna.Study) -> None:
        """The running trials of a dead search (its process known gone on this host, or no
        heartbeat for the grace period): a result it recorded before dying is told to Optuna now
        (not lost, not run again); any other is failed and queued again."""
        for frozen in _dead_running(study):
            if _recorded(frozen):
                result = result_from_json(frozen.user_attrs[RESULT], self.spec.space.name)
                self.tell_optuna(study, optuna.trial.Trial(study, frozen._trial_id), result)
            elif study._storage.set_trial_state_values(frozen._trial_id, state=TrialState.FAIL):
                study.enqueue_trial(frozen.params)
                self.stopped.extend(self.stopped_result(frozen))

    def stopped_result(self, frozen: FrozenTrial) -> list[TrialResult]:
        """A dead search's trial, failed: for the sinks, which may not have heard it started (the
        kill came between two of them). None for a trial killed before its design was drawn."""
        if "config_hash" not in frozen.user_attrs:
            return []
        try:
            point = self.state.sample(optuna.trial.FixedTrial(frozen.params, frozen.number))
        except Exception:  # a parameter was never drawn
            return []
        return [TrialResult(point, "failed", 0, failure=Failure("error", STOPPED), study=self.spec.study,
                            number=frozen.number)]

    def announce_stopped(self) -> None:
        """Tell the sinks of the dead searches' trials failed since the last call."""
        for result in self.stopped:
            self.state.finish(result)
        self.stopped.clear()

    def enqueue_seeds(self, study: optuna.Study) -> None:
        from search_space.sampling import point_parameters

        for seed in self.spec.space.search.seed_points:
            params = point_parameters(self.state.compiled, seed.model_dump(mode="json", exclude_none=True))
            study.enqueue_trial(params, skip_if_exists=True)

    def load_history(self, study: optuna.Study) -> None:
        self.absorb(study)
        for frozen in study.get_trials(deepcopy=False, states=TERMINAL):
            for key, metrics in frozen.user_attrs.items():
                if key.startswith("rung_") and self.moasha:
                    self.moasha.record(int(key[5:]), frozen.number, metrics)
        self.state.recompute()

    def finished_count(self, study: optuna.Study) -> int:
        return sum(1 for t in study.get_trials(deepcopy=False, states=TERMINAL) if _recorded(t))

    # ---- the loop ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Open (or refuse to open) the study and load what it already holds."""
        self.study = self.open_study()
        self.load_history(self.study)

    def run(self) -> StudyState:
        """Drive the search to `spec.trials` finished trials (after `prepare`)."""
        study = self.study
        self.asked: dict[int, optuna.Trial] = {}  # asked by this driver, not yet told
        self.sinks.study_started(self.spec.info)
        for result in sorted(self.state.results.values(), key=lambda r: r.number or 0):
            self.sinks.trial_finished(self.spec.study, result)  # sinks are idempotent
        if self.state.results:
            self.sinks.front_updated(self.spec.study, self.state.front)
        self.announce_stopped()
        context = mp.get_context("spawn")
        manager = SyncManager(ctx=context)
        manager.start(ignore_ctrl_c)  # the report queues outlive a Ctrl-C; the driver handles it
        try:
            events = manager.Queue()
            threads = max(1, int(self.spec.space.search.resources.cpu))
            cache_dir = str(self.spec.run_dir / "cache")
            with ProcessPoolExecutor(self.spec.concurrency, mp_context=context, initializer=init_worker,
                                     initargs=(threads, cache_dir, self.spec.space.trains_vlm)) as pool:
                self.loop(study, pool, manager, events)
        finally:
            manager.shutdown()
        self.absorb(study)  # what other searches on the study finished meanwhile: the whole front
        self.state.recompute()
        self.sinks.front_updated(self.spec.study, self.state.front)
        return self.state

    def loop(self, study: optuna.Study, pool: ProcessPoolExecutor, manager: Any, events: Any) -> None:
        running: dict[Future[TrialResult], _Running] = {}
        beat = _Heartbeat(study)
        try:
            while True:
                self.handle_events(events, running)
                for future in [f for f in running if f.done()]:
                    self.tell(study, running.pop(future), future)
                    beat.set(running.values())
                while len(running) < self.spec.concurrency and self.open_slots(study) > 0:
                    started = self.start(study, pool, manager, events)
                    if started:
                        running[started[0]] = started[1]
                        beat.set(running.values())
                if not running:
                    if self.db.call(lambda: self.finished_count(study)) >= self.spec.trials:
                        return
                    self.db.call(lambda: self.wait_for_others(study))  # another search runs the rest
                time.sleep(0.05)
        except KeyboardInterrupt:
            self.interrupt(study, pool, running)
            raise
        finally:
            beat.stop()

    def open_slots(self, study: optuna.Study) -> int:
        """Trials still to start: the requested count less those finished or running in the study,
        by this search or another on the same study (two terminals, two cluster jobs)."""
        states = (*TERMINAL, TrialState.RUNNING)
        trials = self.db.call(lambda: study.get_trials(deepcopy=False, states=states))
        taken = sum(1 for t in trials if t.state == TrialState.RUNNING or _recorded(t))
        return self.spec.trials - taken

    def wait_for_others(self, study: optuna.Study) -> None:
        """Nothing of ours runs but the study is short: other searches' trials are running. Wait
        for them; those of a search that died go stale, fail and are queued again (then ours)."""
        time.sleep(HEARTBEAT_S)
        self.fail_dead(study)
        self.announce_stopped()
        self.absorb(study)

    def absorb(self, study: optuna.Study) -> None:
        """Results other searches on this study finished, into this one's front."""
        for frozen in study.get_trials(deepcopy=False, states=TERMINAL):
            if frozen.number not in self.state.results and _recorded(frozen):
                result = result_from_json(frozen.user_attrs[RESULT], self.spec.space.name)
                result.study, result.number = self.spec.study, frozen.number
                self.state.results[frozen.number] = result

    def start(self, study: optuna.Study, pool: ProcessPoolExecutor, manager: Any, events: Any
              ) -> tuple[Future[TrialResult], _Running] | None:
        """Ask for a trial; train it in the pool, or settle it at once (rejected, duplicate)."""
        db = self.db.call  # each step alone: a retry repeats only what failed
        trial = db(study.ask)
        self.asked[trial.number] = trial
        db(lambda: study._storage.set_trial_system_attr(trial._trial_id, RECORDER, recorder_id()))
        db(lambda: study._storage.record_heartbeat(trial._trial_id))  # stale-detectable from now
        point = db(lambda: self.state.sample(trial))  # (a suggest repeated returns its value)
        db(lambda: trial.set_user_attr("config_hash", point.config_hash))
        self.sinks.trial_started(self.spec.study, trial.number, point)
        settled = self.state.settled_before_training(point, trial.number)
        if settled is not None:
            self.settle(study, trial, settled)
            return None
        reply = manager.Queue()
        future = pool.submit(run_one, trial.number, point, self.spec.steps, self.spec.device,
                             frozenset(self.rungs), events, reply, self.spec.space.search.resources)
        return future, _Running(trial, point, reply)

    def handle_events(self, events: Any, running: dict[Future[TrialResult], _Running]) -> None:
        by_number = {r.trial.number: r for r in running.values()}
        while True:
            try:
                _, number, step, metrics = events.get_nowait()
            except queue.Empty:
                return
            entry = by_number.get(number)
            if entry is None:
                continue
            self.sinks.trial_intermediate(self.spec.study, number, step, metrics)
            entry.reply.put(self.decide(entry.trial, step, metrics))

    def decide(self, trial: optuna.Trial, step: int, metrics: dict[str, float]) -> bool:
        """Stop this trial at this report?"""
        if self.moasha is not None:
            if step in self.moasha.records:
                trial.set_user_attr(f"rung_{step}", {o.metric: metrics[o.metric]
                                                      for o in self.spec.space.objectives})
            return self.moasha.should_stop(step, trial.number, metrics)
        if self.spec.space.search.early_stopping.kind in ("asha", "hyperband"):
            trial.report(objective_values(self.spec.space, metrics)[0], step)
            return trial.should_prune()
        return False

    def tell(self, study: optuna.Study, entry: _Running, future: Future[TrialResult]) -> None:
        try:
            result = future.result()
        except Exception as exc:  # the worker process itself died
            result = TrialResult(entry.point, "failed", 0,
                                 failure=Failure("error", f"worker process failed: {exc}"))
        result.study, result.number = self.spec.study, entry.trial.number
        self.settle(study, entry.trial, result)

    def settle(self, study: optuna.Study, trial: optuna.Trial, result: TrialResult) -> None:
        """Tell Optuna (waiting out a locked or unreachable database) and record the result."""
        self.db.call(lambda: self.tell_optuna(study, trial, result))  # each write idempotent
        self.asked.pop(trial.number, None)
        self.db.call(lambda: self.absorb(study))  # the front covers every search's trials
        self.state.finish(result)

    def tell_optuna(self, study: optuna.Study, trial: optuna.Trial, result: TrialResult) -> None:
        """The result first (so a search killed before the tell loses nothing: see `fail_dead`),
        then the tell: failures as FAIL, early stops as PRUNED."""
        space = self.spec.space
        try:
            trial.set_user_attr(RESULT, result.to_json())
        except optuna.exceptions.UpdateFinishedTrialError:  # told already (a retry whose answer was lost)
            return
        if result.status == "complete":
            self.constrain(trial, result)
            study.tell(trial, objective_values(space, result.metrics), skip_if_finished=True)
        elif result.status == "pruned":
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        elif result.failure is not None and result.failure.infeasible:
            # known to the sampler as infeasible: worst accuracy, the analytic costs, violations
            self.constrain(trial, result)
            study.tell(trial, objective_values(space, result.metrics, infeasible=True), skip_if_finished=True)
        else:
            trial.set_user_attr("failure_reason", result.failure.reason if result.failure else "error")
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)

    def constrain(self, trial: optuna.Trial, result: TrialResult) -> None:
        """Constraint violations (<= 0 feasible) where Optuna's samplers read them."""
        for i, value in enumerate(violations(self.spec.space, result.metrics)):
            trial.set_constraint(f"{i}:{self.spec.space.constraints[i].metric}", value)

    def interrupt(self, study: optuna.Study, pool: ProcessPoolExecutor,
                  running: dict[Future[TrialResult], _Running]) -> None:
        """Ctrl-C: this driver's unfinished trials are marked failed (interrupted) and queued
        again for --resume."""
        for trial in list(self.asked.values()):
            trial.set_user_attr(INTERRUPTED, True)
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            if trial.params:
                study.enqueue_trial(trial.params)
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)


def _rdb_storage(url: str, tries: int = 5) -> RDBStorage:
    """Optuna's storage on `url`. Two searches creating the same new server database at once
    race to create its tables (SQLite files take turns instead: `one_at_a_time`); the loser finds
    them made by the winner on its next try."""
    for attempt in range(tries):
        try:
            return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                              engine_kwargs=_engine_kwargs(url))
        except Exception as exc:
            if not _creation_race(exc) or attempt == tries - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _creation_race(exc: BaseException) -> bool:
    """A table or revision row another process created first (PostgreSQL's "duplicate key" on
    its catalog, SQLite's "already exists" and UNIQUE failures)."""
    text = str(exc).lower()
    return type(exc).__name__ == "IntegrityError" or any(
        word in text for word in ("already exists", "duplicate key", "unique constraint"))


def _dead_running(study: optuna.Study) -> list[FrozenTrial]:
    """Running trials whose search is dead: known gone on this host, or stale (no heartbeat for
    the grace period, or none at all since a start older than that)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=GRACE_S)
    stale = set(_stale_ids(study)) | set(_without_heartbeat(study, cutoff))
    return [t for t in running if t._trial_id in stale or recorder_gone(t.system_attrs.get(RECORDER))]


def _stale_ids(study: optuna.Study) -> list[int]:
    """Optuna's own stale check (heartbeat older than the grace period)."""
    try:
        return list(study._storage._get_stale_trial_ids(study._study_id))  # type: ignore[attr-defined]
    except Exception:  # a private method we do not control
        log.debug("cannot ask Optuna for stale trials", exc_info=True)
        return []


def _without_heartbeat(study: optuna.Study, started_before: datetime.datetime) -> list[int]:
    """Ids of running trials that never recorded a heartbeat (Optuna's own stale check skips
    them) and started before `started_before`. Reads Optuna's RDB tables; if their layout
    changes, finds none."""
    try:
        from optuna.storages._rdb import models

        storage = getattr(study._storage, "_backend", study._storage)  # under Optuna's cache
        with storage.scoped_session() as session:
            rows = (session.query(models.TrialModel)
                    .filter(models.TrialModel.study_id == study._study_id,
                            models.TrialModel.state == TrialState.RUNNING)
                    .all())
            return [row.trial_id for row in rows if not row.heartbeats
                    and row.datetime_start is not None and row.datetime_start < started_before]
    except Exception:  # a private layout we do not control
        log.debug("cannot look for trials without heartbeats", exc_info=True)
        return []


class _Heartbeat:
    """Records a heartbeat for every running trial, so a killed driver's trials go stale."""

    def __init__(self, study: optuna.Study) -> None:
        self.storage = study._storage
        self.ids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def set(self, running: Any) -> None:
        self.ids = [r.trial._trial_id for r in running]
        self._beat_once()

    def _beat_once(self) -> None:
        for trial_id in list(self.ids):
            try:
                self.storage.record_heartbeat(trial_id)
            except Exception:  # a finished trial or a busy database: the next beat retries
                log.debug("heartbeat for trial %s failed", trial_id, exc_info=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._beat_once()

    def stop(self) -> None:
        self._stop.set()


PRUNERS: Registry[Callable[[SearchSpec, int], optuna.pruners.BasePruner]] = Registry("early stopping")
PRUNERS.register("none", lambda spec, steps: optuna.pruners.NopPruner(), "train every trial fully")
PRUNERS.register("mo_asha", lambda spec, steps: optuna.pruners.NopPruner(),
                 "several objectives: vlmsearch's MO-ASHA decides (not an Optuna pruner)")
PRUNERS.register("asha", lambda spec, steps: optuna.pruners.SuccessiveHalvingPruner(
    min_resource=spec.space.search.early_stopping.min_steps,
    reduction_factor=spec.space.search.early_stopping.reduction_factor), "one objective: ASHA")
PRUNERS.register("hyperband", lambda spec, steps: optuna.pruners.HyperbandPruner(
    min_resource=spec.space.search.early_stopping.min_steps, max_resource=steps,
    reduction_factor=spec.space.search.early_stopping.reduction_factor), "one objective: Hyperband")


def _pruner(spec: SearchSpec) -> optuna.pruners.BasePruner:
    return PRUNERS.get(spec.space.search.early_stopping.kind)(spec, max_steps(spec))


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


def _safe(url: str) -> str:
    """The URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]
