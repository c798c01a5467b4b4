"""The Optuna backend: an ask/tell loop over an RDB study, trials in worker processes.

The study lives in the SQL database (`--storage`), so a killed driver loses nothing: finished
trials keep their full result in user attributes; running ones keep a heartbeat and their
search's `host:pid`, and on `--resume` those of a dead search are failed and queued again (or
told, when the result was recorded just before the search died: see `fail_dead`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.managers import SyncManager
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from common import STOPPED, Backoff, one_at_a_time, recorder_alive, recorder_id, redact_url, sqlite_path
from search_space import Failure, Sinks, TrialConfig, TrialResult, result_from_json
from trials.search.backend import SearchBackend
from trials.search.ctrl_c import CtrlC
from trials.search.optuna_study import GRACE_S, HEARTBEAT_S, RECORDER, Heartbeat, dead_running, rdb_storage
from trials.search.samplers import PRUNERS
from trials.search.study import SearchError, SearchSpec, StudyState, objective_values
from trials.search.worker import ignore_ctrl_c, init_worker, run_one
from trials.search.worker import stop_workers as _stop_workers

log = logging.getLogger(__name__)
RESULT, INTERRUPTED = "result", "interrupted"
TERMINAL = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _recorded(frozen: FrozenTrial) -> bool:
    """A finished trial whose result counts (not one an interrupted search queued again)."""
    return RESULT in frozen.user_attrs and not frozen.user_attrs.get(INTERRUPTED)


def _counted(frozen: FrozenTrial) -> bool:
    """A recorded trial that counts against `--trials`: a dedup hit (a design the study had)
    does not."""
    return _recorded(frozen) and frozen.user_attrs[RESULT].get("reused_from") is None


@dataclass
class _Running:
    trial: optuna.Trial
    point: TrialConfig
    reply: Any


class OptunaBackend(SearchBackend):
    """An ask/tell loop over the RDB study; `run()` drives it to `spec.trials` counted trials."""

    def __init__(self, spec: SearchSpec, sinks: Sinks, say: Callable[[str], None] = log.info) -> None:
        super().__init__(spec, sinks, say)
        self.db = Backoff(f"the study's database ({redact_url(spec.storage)})", say)
        self.stopped: list[TrialResult] = []  # trials of a dead search, failed, for the sinks

    # ---- the study --------------------------------------------------------------------------

    def open_study(self) -> optuna.Study:
        spec = self.spec
        with one_at_a_time(sqlite_path(spec.storage)):  # a new SQLite file: one creator at a time
            storage = rdb_storage(spec.storage)
            study, created = self.create_or_load(storage)
            if created:
                study.set_metric_names([o.metric for o in spec.space.objectives])  # optuna-dashboard
                study.set_user_attr("space", self.design_of_space())
                study.set_user_attr("space_yaml", spec.space_yaml)
                self.enqueue_seeds(study)
        if created and spec.resume:
            self.say(f"--resume: study '{spec.study}' is not in {redact_url(spec.storage)} yet, so it starts "
                     "now (check --study and --storage if you meant an earlier one)")
        if not created:
            self.check_resumable(study)
            drawn = len(study.get_trials(deepcopy=False))
            if drawn:  # resumed (or joined): draws that continue, not repeat, the earlier ones
                study.sampler = self.sampler(drawn)
        return study

    def create_or_load(self, storage: RDBStorage) -> tuple[optuna.Study, bool]:
        """The study, and whether this search created it: of two searches starting it at once,
        exactly one creates it (the database refuses the second name) and seeds it."""
        spec = self.spec
        options: dict[str, Any] = dict(
            storage=storage, study_name=spec.study, pruner=self.pruner(),
            sampler=self.sampler(drawn=0))
        try:
            directions = [o.direction for o in spec.space.objectives]
            return optuna.create_study(directions=directions, **options), True
        except optuna.exceptions.DuplicatedStudyError:
            return optuna.load_study(**options), False

    def pruner(self) -> optuna.pruners.BasePruner:
        stopping = self.spec.space.search.early_stopping
        return PRUNERS.get(stopping.kind)(stopping.min_steps, stopping.reduction_factor, self.steps)

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
                              f"{redact_url(self.spec.storage)}; add --resume to continue it, or name a "
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
        for frozen in dead_running(study):
            if _recorded(frozen):
                result = result_from_json(frozen.user_attrs[RESULT], self.spec.space.name)
                self.record_and_tell(study, optuna.trial.Trial(study, frozen._trial_id), result)
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
        for params in self.seed_parameters():
            study.enqueue_trial(params, skip_if_exists=True)

    def load_history(self, study: optuna.Study) -> None:
        self.absorb(study)
        for frozen in study.get_trials(deepcopy=False, states=TERMINAL):
            for key, metrics in frozen.user_attrs.items():
                if key.startswith("rung_") and self.moasha:
                    self.moasha.record(int(key[5:]), frozen.number, metrics)
        self.state.recompute()

    def finished_count(self, study: optuna.Study) -> int:
        return sum(1 for t in study.get_trials(deepcopy=False, states=TERMINAL) if _counted(t))

    # ---- the loop ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Open (or refuse to open) the study and load what it already holds."""
        self.study = self.open_study()
        self.load_history(self.study)

    def sampler_study(self) -> optuna.Study:
        return self.study

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
            pool = ProcessPoolExecutor(self.spec.concurrency, mp_context=context, initializer=init_worker,
                                       initargs=(threads, cache_dir, self.spec.space.trains_vlm))
            try:
                self.loop(study, pool, manager, _Wakeup(events))
            finally:
                _stop_workers(pool)  # idle by now (or interrupted): no need to wait for their exit
        finally:
            manager.shutdown()
        self.absorb(study)  # what other searches on the study finished meanwhile: the whole front
        self.state.recompute()
        self.sinks.front_updated(self.spec.study, self.state.front)
        return self.state

    def loop(self, study: optuna.Study, pool: ProcessPoolExecutor, manager: Any, wake: _Wakeup) -> None:
        """Start trials while there are open slots; answer reports and collect finished trials as
        soon as they come (the driver sleeps until then, or for a second at most)."""
        running: dict[Future[TrialResult], _Running] = {}
        beat = Heartbeat(study)
        try:
            with CtrlC() as ctrl_c:
                while not self.turn(study, pool, manager, wake, running, beat):
                    ctrl_c.check()  # a Ctrl-C raises here, between storage calls (trials.search.ctrl_c)
                    wake.flag.wait(1.0)
        except KeyboardInterrupt:
            self.interrupt(study, pool, running)
            raise
        finally:
            beat.stop()
            wake.stop()

    def turn(self, study: optuna.Study, pool: ProcessPoolExecutor, manager: Any, wake: _Wakeup,
             running: dict[Future[TrialResult], _Running], beat: Heartbeat) -> bool:
        """One turn of the loop: answer reports, collect finished trials, start new ones; True
        when the search is done."""
        wake.flag.clear()  # (what arrives from here on wakes the loop's wait at once)
        self.handle_events(wake.reports, running)
        for future in [f for f in running if f.done()]:
            self.collect(study, running.pop(future), future)
            beat.set(running.values())
        while len(running) < self.spec.concurrency and self.open_slots(study) > 0:
            started = self.start(study, pool, manager, wake.events)
            if started:
                started[0].add_done_callback(lambda _: wake.flag.set())
                running[started[0]] = started[1]
                beat.set(running.values())
        if running:
            return False
        if self.db.call(lambda: self.finished_count(study)) >= self.spec.trials:
            return True
        if self.state.exhausted():
            self.say(self.state.exhausted())
            return True
        self.db.call(lambda: self.wait_for_others(study))  # another search runs the rest
        return False

    def open_slots(self, study: optuna.Study) -> int:
        """Trials still to start: the requested count less those finished or running in the study,
        by this search or another on the same study (two terminals, two cluster jobs)."""
        states = (*TERMINAL, TrialState.RUNNING)
        trials = self.db.call(lambda: study.get_trials(deepcopy=False, states=states))
        taken = sum(1 for t in trials if t.state == TrialState.RUNNING or _counted(t))
        return 0 if self.state.exhausted() else self.spec.trials - taken

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

    def handle_events(self, events: queue.Queue, running: dict[Future[TrialResult], _Running]) -> None:
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
        if self.stopping.single_objective:  # Optuna's pruner ranks the first objective
            trial.report(objective_values(self.spec.space, metrics)[0], step)
            return trial.should_prune()
        return False

    def collect(self, study: optuna.Study, entry: _Running, future: Future[TrialResult]) -> None:
        try:
            result = future.result()
        except Exception as exc:  # the worker process itself died
            result = TrialResult(entry.point, "failed", 0,
                                 failure=Failure("error", f"worker process failed: {exc}"))
        result.study, result.number = self.spec.study, entry.trial.number
        self.settle(study, entry.trial, result)

    def settle(self, study: optuna.Study, trial: optuna.Trial, result: TrialResult) -> None:
        """Tell Optuna (waiting out a locked or unreachable database) and record the result."""
        self.db.call(lambda: self.record_and_tell(study, trial, result))  # each write idempotent
        self.asked.pop(trial.number, None)
        self.db.call(lambda: self.absorb(study))  # the front covers every search's trials
        self.state.finish(result)

    def record_and_tell(self, study: optuna.Study, trial: optuna.Trial, result: TrialResult) -> None:
        """The result first (so a search killed before the tell loses nothing: see `fail_dead`),
        then the tell, by the base's one rule."""
        try:
            trial.set_user_attr(RESULT, result.to_json())
        except optuna.exceptions.UpdateFinishedTrialError:  # told already (a retry whose answer was lost)
            return
        self.tell(study, trial, result)

    def interrupt(self, study: optuna.Study, pool: ProcessPoolExecutor,
                  running: dict[Future[TrialResult], _Running]) -> None:
        """Ctrl-C: this driver's unfinished trials are marked failed (interrupted) and queued
        again for --resume."""
        for trial in list(self.asked.values()):
            trial.set_user_attr(INTERRUPTED, True)
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            if trial.params:
                study.enqueue_trial(trial.params)
        _stop_workers(pool)


class _Wakeup:
    """The workers' reports, read from the manager's queue by a thread into a local one, and a
    flag that wakes the driver for each report and each finished trial (instead of polling)."""

    def __init__(self, events: Any) -> None:
        self.events, self.reports = events, queue.Queue()
        self.flag, self._stop = threading.Event(), threading.Event()
        threading.Thread(target=self._read, daemon=True, name="vlmsearch-reports").start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.events.get(timeout=0.5)
            except queue.Empty:
                continue
            except Exception:  # the manager is gone (the search ends)
                return
            self.reports.put(report)
            self.flag.set()

    def stop(self) -> None:
        self._stop.set()

