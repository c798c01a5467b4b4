"""`vlmsearch run`: the live view of a search (a sink) and the closing Pareto table."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from common import STOPPED
from search_space import Front, SearchSpace, StudyInfo, TrialConfig, TrialResult

EXTRA = ("visual_tokens", "positions_used")  # analytic metrics the front shows beside the objectives


def _fmt(value: float) -> str:
    return f"{value:.3f}" if isinstance(value, float) and not float(value).is_integer() else f"{value:g}"


class ProgressView:
    """A sink that keeps counts, best values and the hypervolume, shown live on the console."""

    def __init__(self, space: SearchSpace, total: int, console: Console) -> None:
        self.space, self.total, self.console = space, total, console
        self.start = time.time()
        self.running: dict[int, str] = {}
        self.results: dict[int, TrialResult] = {}
        self.new_finished = 0
        self.front: Front | None = None
        self.live = Live(self, console=console, refresh_per_second=2, transient=False)

    def __enter__(self) -> ProgressView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)
        self.console.line()

    # ---- sink events -------------------------------------------------------------------------

    def study_started(self, study: StudyInfo) -> None:
        self.name = study.name

    def trial_started(self, study: str, number: int, point: TrialConfig) -> None:
        self.running[number] = describe(point)

    def trial_intermediate(self, study: str, number: int, step: int, metrics: dict[str, float]) -> None:
        if number in self.running:
            self.running[number] = f"{self.running[number].split(' @')[0]} @{step}"

    def trial_finished(self, study: str, result: TrialResult) -> None:
        number = result.number or 0
        if number in self.running:
            self.new_finished += 1
        self.running.pop(number, None)
        self.results[number] = result

    def front_updated(self, study: str, front: Front) -> None:
        self.front = front

    # ---- rendering --------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Finished trials by status; `stopped`: those a killed search left (failed, their designs
        queued again), and `reused`: dedup hits (a design the study had), which do not count
        towards the requested trials."""
        out = {"complete": 0, "pruned": 0, "failed": 0, "stopped": 0, "reused": 0}
        for result in self.results.values():
            stopped = result.failure is not None and result.failure.message == STOPPED
            out["stopped" if stopped else "reused" if result.reused_from is not None else result.status] += 1
        return out

    def __rich__(self) -> Group:
        counts, elapsed = self.counts(), time.time() - self.start
        done = counts["complete"] + counts["pruned"] + counts["failed"]
        stopped = f"  (+{counts['stopped']} stopped by a kill, run again)" if counts["stopped"] else ""
        if counts["reused"]:
            stopped += f"  (+{counts['reused']} designs drawn again, results reused)"
        eta = "-"
        if self.new_finished and done < self.total:
            eta = f"{elapsed / self.new_finished * (self.total - done):.0f} s"
        head = Text(f"{getattr(self, 'name', '')}: {done}/{self.total} finished  "
                    f"complete {counts['complete']}  running {len(self.running)}  "
                    f"pruned {counts['pruned']}  failed {counts['failed']}  "
                    f"elapsed {elapsed:.0f} s  remaining ~{eta}{stopped}")
        lines = [head, Text(self.best_line())]
        lines += [Text(f"  running #{n}: {what}", style="dim") for n, what in sorted(self.running.items())]
        return Group(*lines)

    def best_line(self) -> str:
        feasible = [r for r in self.results.values() if r.status == "complete" and r.pareto_rank is not None]
        if not feasible:
            return "best: -"
        parts = []
        for o in self.space.objectives:
            pick = max if o.direction == "maximize" else min
            parts.append(f"{o.metric} {_fmt(pick(r.metrics[o.metric] for r in feasible))}")
        volume = f"  hypervolume {self.front.hypervolume:.4g}" if self.front else ""
        return "best: " + ", ".join(parts) + volume


def describe(point: TrialConfig) -> str:
    if not point.trains_vlm:
        return " ".join(f"{k}={v}" for k, v in point.parameters.items())
    experts = "+".join(point.experts)
    return f"{experts} | {point.fusion.kind} | {point.positions}"


def pareto_table(space: SearchSpace, results: list[TrialResult], hypervolume: float) -> Table:
    front = sorted((r for r in results if r.pareto_rank == 0),
                   key=lambda r: [r.metrics[o.metric] * (-1 if o.direction == "maximize" else 1)
                                  for o in space.objectives])
    table = Table(title=f"Pareto front: {len(front)} of {len(results)} trials "
                        f"(hypervolume {hypervolume:.4g})", header_style="bold")
    table.add_column("#", justify="right")
    for o in space.objectives:
        table.add_column(f"{o.metric} ({'max' if o.direction == 'maximize' else 'min'})", justify="right")
    extras = [m for m in EXTRA if space.trains_vlm and m not in {o.metric for o in space.objectives}]
    for extra in extras:
        table.add_column(extra, justify="right")
    table.add_column("design")
    table.add_column("hash")
    for r in front:
        cells = [str(r.number)] + [_fmt(r.metrics[o.metric]) for o in space.objectives]
        cells += [_fmt(r.metrics[m]) for m in extras]
        table.add_row(*cells, describe(r.config), r.config_hash)
    return table
