"""One study in MLflow, written idempotently: every call can be repeated (a resumed search, a
replay after an outage, `vlmsearch sync`) without a second run or a second metric point.

    open(study)            -> experiment + parent run (found by tag, else created)
    start_trial(n, point)  -> child run (found by `vlmsearch.trial` = n, else created)
    log_step(n, step, m)   -> intermediate metrics, one batched call
    finish_trial(result)   -> missing history + final metrics, tags, terminal status, `synced`
    update_front(front)    -> `pareto_rank`/`is_pareto` tags where they changed, hypervolume at
                              step = finished trials, pareto.csv/png/html on the parent

What has been written is read back once at `open` (a search of the experiment's runs), so the
tracker knows which runs exist and which metric points they hold.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common import STOPPED, one_at_a_time, recorder_gone, recorder_id, sqlite_path
from dashboard import layout
from dashboard.client import artifact_root
from dashboard.plots import Design, pareto_csv, pareto_html, pareto_png
from search_space import TrialResult, dump_yaml, feasible

PLOT_EVERY_S = 30.0  # front files during a search at most this often (and always at its end)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ChildRun:
    run_id: str
    status: str  # MLflow's: RUNNING, FINISHED, KILLED, FAILED
    tags: dict[str, str] = field(default_factory=dict)
    logged: dict[tuple[str, int], float] | None = None  # (metric, step) -> value; None: not read yet
    described: bool = True  # its params and point.yaml are logged

    @property
    def synced(self) -> bool:
        return self.tags.get(layout.SYNCED) == "true"


@dataclass
class OpenReport:
    created_parent: bool = False
    duplicates_deleted: int = 0
    orphans_terminated: int = 0


class StudyTracker:
    def __init__(self, client: Any, study: str, artifact_location: str | None = None,
                 lock: Path | None = None) -> None:
        self.client, self.study, self.artifact_location = client, study, artifact_location
        self.lock = lock  # a local tracking file: searches opening the study take turns
        self.experiment_id = ""
        self.parent_id = ""
        self.children: dict[int, ChildRun] = {}
        self.designs: dict[int, Design] = {}
        self.objectives: list[Any] = []
        self.constraints: list[Any] = []
        self.hypervolume_steps: set[int] = set()
        self.plotted: tuple[tuple[int, int | None], ...] | None = None  # what the front files show
        self.unplotted: float | None = None  # the hypervolume of a front not in the files yet
        self.plotted_at = -math.inf
        self.recorder = recorder_id()

    @classmethod
    def on(cls, client: Any, uri: str, study: str) -> StudyTracker:
        """The tracker of `study` on the tracking store at `uri` (`client` opened on it)."""
        return cls(client, study, artifact_root(uri), sqlite_path(uri))

    # ---- the study -------------------------------------------------------------------------

    def open(self, space: Any, space_yaml: str, settings: Mapping[str, Any]) -> OpenReport:
        """Find or create the experiment and the parent run; read back the child runs."""
        self.objectives, self.constraints = list(space.objectives), list(space.constraints)
        report = OpenReport()
        with one_at_a_time(self.lock):  # two searches starting together: one experiment, one parent
            self.experiment_id = self._experiment()
            self.parent_id, report.created_parent = self._parent(report)
        self._read_children(report)
        self._log_settings(settings)
        self.client.log_text(self.parent_id, space_yaml, "space.yaml")
        history = self.client.get_metric_history(self.parent_id, "hypervolume")
        self.hypervolume_steps = {m.step for m in history}
        return report

    def _experiment(self) -> str:
        tags = {layout.STUDY: self.study, layout.EXPERIMENT_KIND: "custom_model_development",
                layout.FIRST_OBJECTIVE: f"{self.objectives[0].metric}:{self.objectives[0].direction}"
                if self.objectives else ""}
        found = self.client.get_experiment_by_name(self.study)
        if found is None:
            location = f"{self.artifact_location}/{self.study}" if self.artifact_location else None
            try:
                return self.client.create_experiment(self.study, artifact_location=location, tags=tags)
            except Exception as exc:  # a server: another search created it a moment ago
                found = self.client.get_experiment_by_name(self.study)
                if found is None:
                    raise exc from None
        if found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)  # the user's runs come back
        for key, value in tags.items():
            if found.tags.get(key) != value:
                self.client.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id

    def _runs(self, kind: str) -> list[Any]:
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], f"tags.`{layout.KIND}` = '{kind}'",
                                           max_results=1000, order_by=["attributes.start_time ASC"],
                                           page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _parent(self, report: OpenReport) -> tuple[str, bool]:
        parents = self._runs("study")
        for extra in parents[1:]:  # a crash between create and tag lookup: keep the first
            self.client.delete_run(extra.info.run_id)
            report.duplicates_deleted += 1
        if parents:
            run_id = parents[0].info.run_id
            if parents[0].info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            return run_id, False
        run = self.client.create_run(self.experiment_id, run_name=self.study, tags={
            layout.KIND: "study", layout.STUDY: self.study,
            layout.NOTE: f"vlmsearch study '{self.study}': one child run per trial; filter "
                         f"`{layout.PARETO_FILTER}` for the Pareto front; pareto.html is the plot."})
        first = min(self._runs("study"), key=lambda r: (r.info.start_time or 0, r.info.run_id))
        if first.info.run_id != run.info.run_id:  # a server: another search created one just before
            self.client.delete_run(run.info.run_id)
            return first.info.run_id, False
        return run.info.run_id, True

    def _read_children(self, report: OpenReport) -> None:
        by_number: dict[int, list[Any]] = {}
        for run in self._runs("trial"):
            number = run.data.tags.get(layout.TRIAL, "")
            if number.isdigit():
                by_number.setdefault(int(number), []).append(run)
        for number, runs in by_number.items():
            runs.sort(key=lambda r: (r.data.tags.get(layout.SYNCED) != "true", r.info.start_time or 0))
            keep, extras = runs[0], runs[1:]
            for extra in extras:  # the same trial logged twice (a reply lost in an outage)
                self.client.delete_run(extra.info.run_id)
                report.duplicates_deleted += 1
            child = ChildRun(keep.info.run_id, keep.info.status, dict(keep.data.tags),
                             described=bool(keep.data.params))
            if child.status == "RUNNING" and recorder_gone(child.tags.get(layout.RECORDER)):
                self._terminate(child, STOPPED)
                report.orphans_terminated += 1
            if child.tags.get(layout.PARENT) != self.parent_id:
                self.client.set_tag(child.run_id, layout.PARENT, self.parent_id)
            self.children[number] = child

    def _log_settings(self, settings: Mapping[str, Any]) -> None:
        from mlflow.entities import Param, RunTag

        have = self.client.get_run(self.parent_id).data.params
        wanted = layout.settings_params(settings)
        new = [Param(k, v) for k, v in wanted.items() if k not in have]
        changed = [RunTag(f"{k}.latest", v) for k, v in wanted.items() if k in have and have[k] != v]
        for part in layout.chunks(new, layout.MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.parent_id, params=list(part))
        for part in layout.chunks(changed, layout.MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.parent_id, tags=list(part))  # params cannot change; tags can

    def close(self, status: str) -> None:
        """The search ended (`finished` or `interrupted`): its own running trials are terminated
        as failed (the store does the same), and the parent run ends."""
        self.plot_front()
        for child in self.children.values():
            if child.status == "RUNNING" and child.tags.get(layout.RECORDER) == self.recorder:
                self._terminate(child, f"the search was {status} before the trial finished")
        self.client.set_terminated(self.parent_id, "FINISHED" if status == "finished" else "KILLED")

    def _terminate(self, child: ChildRun, message: str) -> None:
        self._set_tags(child, {"status": "failed", "failure": "error", "failure_message": message,
                               **layout.pareto_tags(None, "failed")})
        self.client.set_terminated(child.run_id, "FAILED")
        child.status = "FAILED"

    # ---- trials ----------------------------------------------------------------------------

    def start_trial(self, number: int, point: Any, running: bool = False) -> ChildRun:
        """The trial's run (created with its params and point.yaml if it has none). `running`: the
        trial (re)starts now, so a run that an interrupted search terminated runs again."""
        child = self.children.get(number)
        if running and child is not None and child.status != "RUNNING" and not child.synced:
            self.client.update_run(child.run_id, status="RUNNING")
            child.status = "RUNNING"
            self._set_tags(child, {"status": "running", layout.RECORDER: self.recorder})
        if child is None:
            tags = {layout.KIND: "trial", layout.STUDY: self.study, layout.TRIAL: str(number),
                    layout.PARENT: self.parent_id, layout.RECORDER: self.recorder, "status": "running",
                    "config_hash": point.config_hash}
            run = self.client.create_run(self.experiment_id, run_name=layout.trial_run_name(number),
                                         tags=tags)
            child = self.children[number] = ChildRun(run.info.run_id, "RUNNING", tags, logged={},
                                                     described=False)
        if not child.described:  # (again, after a failure halfway: same values are accepted)
            self._describe(child, point)
        return child

    def _describe(self, child: ChildRun, point: Any) -> None:
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in layout.point_params(point.canonical()).items()]
        for part in layout.chunks(params, layout.MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(child.run_id, params=list(part))
        self.client.log_text(child.run_id, dump_yaml(point.to_yaml_data()), "point.yaml")
        child.described = True

    def log_step(self, number: int, step: int, metrics: Mapping[str, float]) -> None:
        child = self.children.get(number)
        if child is not None:
            self._log_metrics(child, [(step, metrics)])

    def finish_trial(self, result: TrialResult) -> None:
        number = int(result.number or 0)
        child = self.start_trial(number, result.config)
        if result.status == "complete":  # what the front plot shows
            self.designs[number] = Design(number, dict(result.metrics), result.pareto_rank,
                                          result.config.canonical(), result.config_hash, child.run_id)
        if child.synced and child.tags.get("status") == result.status:
            return
        self._log_metrics(child, result.history)
        self._log_metrics(child, [(result.steps, result.metrics)], final=True)
        if child.status != layout.RUN_STATUS[result.status]:
            self.client.set_terminated(child.run_id, layout.RUN_STATUS[result.status])
            child.status = layout.RUN_STATUS[result.status]
        self._set_tags(child, {**self._result_tags(result), layout.SYNCED: "true"})
        if result.failure is None:  # e.g. terminated as an orphan, then finished by a resumed search
            self._delete_tags(child, ("failure", "failure_message"))

    def _result_tags(self, result: TrialResult) -> dict[str, str]:
        ok = result.status in ("complete", "pruned") and feasible(result.metrics, self.constraints)
        tags = {"status": result.status, "steps": str(result.steps), "config_hash": result.config_hash,
                "feasible": "true" if ok else "false",
                **layout.pareto_tags(result.pareto_rank, result.status)}
        if result.failure is not None:
            tags.update(failure=result.failure.reason, failure_message=result.failure.message)
        if result.reused_from is not None:
            tags["reused_from"] = str(result.reused_from)
        return tags

    def _set_tags(self, child: ChildRun, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        changed = [RunTag(*layout.tag(k, v)) for k, v in tags.items() if child.tags.get(k) != v]
        for part in layout.chunks(changed, layout.MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(child.run_id, tags=list(part))
        child.tags.update({t.key: t.value for t in changed})

    def _delete_tags(self, child: ChildRun, keys: Iterable[str]) -> None:
        for key in keys:
            if key in child.tags:
                self.client.delete_tag(child.run_id, key)
                del child.tags[key]

    def _points(self, child: ChildRun) -> dict[tuple[str, int], float]:
        """The (metric, step) -> value points the run holds (read from MLflow once, for a run
        found there rather than created here)."""
        if child.logged is None:
            child.logged = {}
            for name in sorted(self.client.get_run(child.run_id).data.metrics):
                for m in self.client.get_metric_history(child.run_id, name):
                    child.logged[(name, m.step)] = m.value
        return child.logged

    def _log_metrics(self, child: ChildRun, entries: Iterable[tuple[int, Mapping[str, float]]],
                     final: bool = False) -> None:
        """Points the run lacks, in batches. A final value is logged even where an intermediate
        one sits at the same step (unless equal), a millisecond later, so it is the run's latest."""
        from mlflow.entities import Metric

        have = self._points(child)
        stamp = now_ms() + (1 if final else 0)
        new: dict[tuple[str, int], float] = {}
        for step, values in entries:
            for name, value in values.items():
                key = (name, int(step))
                if not _number(value) or (key in have and (not final or _same(have[key], value))):
                    continue
                new[key] = float(value)
        ordered = sorted(new.items(), key=lambda item: item[0][1])  # by step
        metrics = [Metric(name, value, stamp, step) for (name, step), value in ordered]
        for part in layout.chunks(metrics, layout.MAX_METRICS_PER_BATCH):
            self.client.log_batch(child.run_id, metrics=list(part))
        have.update(new)

    # ---- the front -------------------------------------------------------------------------

    def update_front(self, ranks: Mapping[int, int | None], hypervolume: float, finished: int) -> None:
        for number, child in self.children.items():
            status = child.tags.get("status", "running")
            if status != "running":
                self._set_tags(child, layout.pareto_tags(ranks.get(number), status))
        for number, design in self.designs.items():
            self.designs[number] = replace(design, rank=ranks.get(number))
        self.log_front_history({finished: (hypervolume, sum(1 for r in ranks.values() if r == 0))})
        plotted = tuple(sorted((d.number, d.rank) for d in self.designs.values()))
        if plotted != self.plotted:  # a pruned or failed trial changes nothing drawn
            self.plotted, self.unplotted = plotted, hypervolume
        self.plot_front(force=False)

    def plot_front(self, force: bool = True) -> None:
        """Log the front files (csv, html, png: ~0.5 s) if the front changed since they were, at
        most every PLOT_EVERY_S during a search; `force`: now (the search or a sync ends)."""
        due = force or time.monotonic() - self.plotted_at >= PLOT_EVERY_S
        if self.unplotted is not None and due:
            self._log_front_files(self.unplotted)
            self.unplotted, self.plotted_at = None, time.monotonic()

    def log_front_history(self, history: Mapping[int, tuple[float, int]]) -> None:
        """The parent's `hypervolume`, `pareto_size` and `finished_trials` at step = finished trials,
        for the steps it does not hold yet (one batch)."""
        from mlflow.entities import Metric

        stamp, metrics = now_ms(), []
        for step, (volume, size) in sorted(history.items()):
            if step not in self.hypervolume_steps:
                metrics += [Metric("hypervolume", float(volume), stamp, step),
                            Metric("pareto_size", float(size), stamp, step),
                            Metric("finished_trials", float(step), stamp, step)]
        for part in layout.chunks(metrics, layout.MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.parent_id, metrics=list(part))
        self.hypervolume_steps.update(history)

    def _log_front_files(self, hypervolume: float) -> None:
        designs = list(self.designs.values())
        title = f"{self.study}: Pareto front of {len(designs)} complete trials"
        with tempfile.TemporaryDirectory(prefix="vlmsearch-front-") as folder:
            files = {"pareto.csv": pareto_csv(designs, self.objectives).encode(),
                     "pareto.html": pareto_html(designs, self.objectives, title, hypervolume).encode(),
                     "pareto.png": pareto_png(designs, self.objectives, title)}
            for name, data in files.items():
                (Path(folder) / name).write_bytes(data)
            self.client.log_artifacts(self.parent_id, folder)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(float(b)))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isinf(value)
