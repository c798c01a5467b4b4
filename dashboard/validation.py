"""A validation in MLflow (`vlmsearch validate`): each validation trial a child run of the study's
parent run (tag `vlmsearch.role` = `validation`, its design's params, final metrics), and on the
parent the summary metrics (`validation/kendall_tau`, ...; step = the validation budget), the tag
`fidelity_tau` and the plot `validation/fidelity.png`.

Written idempotently (a rerun finds its runs by `vlmsearch.validation` = the trial's number), and
never in the way: the first MLflow failure is said once and tracking stops for this validation.
"""

from __future__ import annotations

import io
import logging
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import redact_secrets, redact_url
from dashboard import layout
from dashboard.client import parent_run
from search_space import TrialConfig, TrialResult

log = logging.getLogger(__name__)
ROLE, VALIDATION = "vlmsearch.role", "vlmsearch.validation"
PLOT = "validation/fidelity.png"


@dataclass(frozen=True)
class FidelityDot:
    """One design in the fidelity plot: its search-budget value and validation mean ± CI."""

    label: str
    search: float
    mean: float
    half_width: float
    front: bool


class ValidationTracker:
    """Opened on a study's experiment; `None` from `find` when MLflow has no parent run for it."""

    def __init__(self, client: Any, study: str, experiment_id: str, parent_id: str, uri: str,
                 say: Callable[[str], None] = log.warning) -> None:
        self.client, self.study, self.uri, self.say = client, study, uri, say
        self.experiment_id, self.parent_id = experiment_id, parent_id
        self.runs: dict[int, Any] = {}  # validation number -> run info (id, status)
        self.live = True

    @classmethod
    def find(cls, client: Any, uri: str, study: str, say: Callable[[str], None] = log.warning
             ) -> ValidationTracker | None:
        """The tracker of `study`'s parent run (the search's: `vlmsearch.kind` = `study`)."""
        found = parent_run(client, study)
        if found is None:
            return None
        tracker = cls(client, study, *found, uri, say)
        tracker.guarded(tracker._read_runs)
        return tracker

    def guarded(self, write: Callable[[], None]) -> None:
        """`write()`, unless tracking failed already; a failure is said once and ends tracking."""
        if not self.live:
            return
        try:
            write()
        except Exception as exc:
            self.live = False
            reason = redact_secrets(f"{type(exc).__name__}: {exc}", self.uri).splitlines()[0][:300]
            self.say(f"MLflow at {redact_url(self.uri)} failed ({reason}); the validation goes on, "
                     "recorded in the results store only")

    def _read_runs(self) -> None:
        for run in self.client.search_runs([self.experiment_id], f"tags.`{layout.KIND}` = 'validation'",
                                           max_results=5000):
            number = run.data.tags.get(VALIDATION, "")
            if number.isdigit():
                self.runs.setdefault(int(number), run.info)

    # ---- validation trials ------------------------------------------------------------------

    def trial_started(self, number: int, point: TrialConfig, tags: Mapping[str, str]) -> None:
        self.guarded(lambda: self._start(number, point, tags))

    def _start(self, number: int, point: TrialConfig, tags: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        found = self.runs.get(number)
        if found is not None:
            if found.status != "RUNNING":
                self.client.update_run(found.run_id, status="RUNNING")
            self.client.set_tag(found.run_id, "status", "running")
            return
        run = self.client.create_run(self.experiment_id, run_name=f"validation-{number:04d}", tags={
            layout.KIND: "validation", ROLE: "validation", layout.STUDY: self.study,
            VALIDATION: str(number), layout.PARENT: self.parent_id, "status": "running",
            "config_hash": point.config_hash, **tags})
        params = [Param(k, v) for k, v in layout.point_params(point.canonical()).items()]
        for part in layout.chunks(params, layout.MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run.info.run_id, params=list(part))
        self.runs[number] = run.info

    def trial_finished(self, number: int, result: TrialResult) -> None:
        self.guarded(lambda: self._finish(number, result))

    def _finish(self, number: int, result: TrialResult) -> None:
        from mlflow.entities import Metric, RunTag

        run_id = self.runs[number].run_id
        metrics = [Metric(k, float(v), _now_ms(), result.steps) for k, v in result.metrics.items()
                   if _finite(v)]
        tags = [RunTag("status", result.status)]
        if result.failure is not None:
            tags += [RunTag(*layout.tag("failure", result.failure.reason)),
                     RunTag(*layout.tag("failure_message", result.failure.message))]
        for part in layout.chunks(metrics, layout.MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=list(part))
        self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, "FINISHED" if result.status == "complete" else "FAILED")

    # ---- the parent -------------------------------------------------------------------------

    def summary(self, metrics: Mapping[str, float], steps: int, dots: Sequence[FidelityDot],
                objective: str) -> None:
        """`validation/<name>` metrics at step = `steps`, the `fidelity_tau` tag and the plot."""
        self.guarded(lambda: self._summary(metrics, steps, dots, objective))

    def _summary(self, metrics: Mapping[str, float], steps: int, dots: Sequence[FidelityDot],
                 objective: str) -> None:
        from mlflow.entities import Metric, RunTag

        stamp = _now_ms()
        logged = [Metric(f"validation/{k}", float(v), stamp, steps) for k, v in metrics.items() if _finite(v)]
        tau = metrics.get("kendall_tau", math.nan)
        self.client.log_batch(self.parent_id, metrics=logged, tags=[
            RunTag("fidelity_tau", f"{tau:.4f}" if _finite(tau) else "nan")])
        with tempfile.TemporaryDirectory(prefix="vlmsearch-fidelity-") as folder:
            path = Path(folder) / Path(PLOT).name
            title = f"{self.study}: search vs validation ({steps} steps)"
            path.write_bytes(fidelity_png(dots, objective, title))
            self.client.log_artifact(self.parent_id, str(path), str(Path(PLOT).parent))


def fidelity_png(dots: Sequence[FidelityDot], objective: str, title: str) -> bytes:
    """Search-budget (x) against validation-budget (y) value of `objective`, one dot per design with
    its CI bar; front designs marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4.8), dpi=110)
    ax = figure.add_subplot()
    for front, colour, label in ((False, "#7f7f7f", "top-k design"), (True, "#1f77b4", "Pareto front")):
        shown = [d for d in dots if d.front == front and _finite(d.search) and _finite(d.mean)]
        if shown:
            errors = [d.half_width if _finite(d.half_width) else 0.0 for d in shown]
            ax.errorbar([d.search for d in shown], [d.mean for d in shown], yerr=errors, fmt="o",
                        color=colour, ecolor=colour, capsize=3, label=label)
            for d in shown:
                ax.annotate(d.label, (d.search, d.mean), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
    values = [v for d in dots for v in (d.search, d.mean) if _finite(v)]
    if values:
        ax.plot([min(values), max(values)], [min(values), max(values)], ls="--", c="#c0c0c0", lw=1)
    ax.set_xlabel(f"{objective} at the search budget")
    ax.set_ylabel(f"{objective} at the validation budget (mean ± 95% CI)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if dots:
        ax.legend(loc="best", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
