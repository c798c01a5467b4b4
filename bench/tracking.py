"""MLflow logging per trial: the tracker's batched calls vs one call per value, side by side.

    python bench/tracking.py [--trials 30] [--backend sqlite|server|both]

`--trials` quickstart points (sampled from examples/quickstart.yaml with RandomDraw, distinct and
buildable), each a complete trial with 14 metrics at 3 intermediate steps and the final step,
are logged twice per backend into two studies (experiments) of one tracking store:

  batched    the project's code path, `dashboard.tracker.StudyTracker`, called as the MLflow sink
             calls it: start_trial, log_step per intermediate step, finish_trial, update_front
  unbatched  the same runs, params, metric points, tags, point.yaml and front files with one
             client call per value: create_run, log_param, log_metric, set_tag, log_text,
             set_terminated; the front: set_tag, log_metric, log_artifact per file

The two variants alternate per trial (and which goes first alternates too), so both see the same
noise. "trial" is the time from start_trial to finish_trial; "front" is update_front after it
(pareto tags that changed, the parent's hypervolume metrics, pareto.csv/png/html rendered and
logged), measured apart: the search calls it once per finished trial, and most of it is rendering,
which is also timed alone (no MLflow) in the same loop. Calls are client calls (log_artifacts
counts once, though against a server it uploads each file). Backends: a local SQLite store, and a
real `mlflow server` (SQLite behind it, artifacts proxied) that the script starts on loopback.
After timing, the runs of both variants are compared: same params, metrics and tags.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from common import recorder_id
from dashboard import (
    DashboardError,
    Design,
    StudyTracker,
    artifact_root,
    layout,
    open_client,
    pareto_csv,
    pareto_html,
    pareto_png,
    start_server,
    stop_server,
    wait_until_up,
)
from search_space import (
    InvalidDesign,
    RandomDraw,
    TrialResult,
    UnknownGeometry,
    compile_space,
    dump_yaml,
    feasible,
    parse,
    point_cost,
    space_cost_range,
    study_front,
)
from storage.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
STEPS = (50, 150, 250)  # intermediate evaluations; the final one is at train.steps
SKILLS = {"color": 1 / 6, "shape": 1 / 6, "relation": 1 / 6, "position": 1 / 2, "count": 1 / 5,
          "small_text": 1 / 10}  # skill -> chance


@dataclass(frozen=True)
class Entry:
    """One trial as the sink sees it: the point, its intermediate reports, its result, and the
    study's front after it finished."""

    number: int
    point: Any
    reports: list[tuple[int, dict[str, float]]]
    result: TrialResult
    ranks: dict[int, int | None]
    hypervolume: float
    finished: int


def plan(n: int) -> tuple[Any, str, list[Entry]]:
    text = QUICKSTART.read_text(encoding="utf-8")
    space = parse(text).space
    compiled, rng = compile_space(space), np.random.default_rng(0)
    cost_range = space_cost_range(compiled)
    bounds = {}  # as the search's StudyState sets them
    if cost_range.tokens:
        bounds["visual_tokens"] = cost_range.tokens[1] + 1.0
    if cost_range.positions:
        bounds["positions_used"] = cost_range.positions[1] + 1.0
    entries: list[Entry] = []
    done: list[TrialResult] = []
    seen: set[str] = set()
    seed = 0
    while len(entries) < n:
        point = compiled.sample(RandomDraw(seed))
        seed += 1
        try:
            cost = point_cost(point)
        except (InvalidDesign, UnknownGeometry):
            continue
        if point.config_hash in seen:
            continue
        seen.add(point.config_hash)
        number, total = len(entries), point.train.steps
        skill = {k: float(rng.uniform(c, 1.0)) for k, c in SKILLS.items()}
        trainable = int(rng.integers(80_000, 300_000))
        static = {"visual_tokens": cost.visual_tokens, "positions_used": cost.positions_used,
                  "trainable_params": trainable, "total_params": trainable + 300_832}
        seconds = float(rng.uniform(10, 40))
        history = []
        for step in (*STEPS, total):
            done_part = (step / total) ** 0.5
            accs = {f"accuracy/{k}": float(np.clip(SKILLS[k] + (v - SKILLS[k]) * done_part
                                                   + rng.normal(0, 0.02), 0, 1)) for k, v in skill.items()}
            history.append((step, {"accuracy": float(np.mean(list(accs.values()))), **accs, **static,
                                   "latency_ms": float(rng.uniform(5, 20)),
                                   "peak_mem_mb": float(rng.uniform(500, 900)),
                                   "train_time_s": seconds * step / total}))
        result = TrialResult(point, "complete", total, dict(history[-1][1]), history=history,
                             study="bench", number=number)
        done.append(result)
        ranks, volume = study_front([r.metrics for r in done], space.objectives, space.constraints, bounds)
        by_number = dict(enumerate(ranks))
        entries.append(Entry(number, point, history[:-1], replace(result, pareto_rank=by_number[number]),
                             by_number, volume, len(done)))
    return space, text, entries


class Counted:
    """The client, counting the calls made through it."""

    def __init__(self, client: Any) -> None:
        self._client, self.calls = client, 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return method(*args, **kwargs)

        return call


@dataclass
class Timings:
    trial_ms: list[float] = field(default_factory=list)
    trial_calls: list[int] = field(default_factory=list)
    front_ms: list[float] = field(default_factory=list)
    front_calls: list[int] = field(default_factory=list)
    render_ms: list[float] = field(default_factory=list)  # the front's files alone, no MLflow


class Batched:
    name = "batched"

    def __init__(self, uri: str, study: str, space: Any, text: str) -> None:
        self.client = Counted(open_client(uri))
        self.tracker = StudyTracker(self.client, study, artifact_root(uri))
        self.tracker.open(space, text, {"backend": "bench", "trials": "bench"})
        self.experiment_id = self.tracker.experiment_id

    def trial(self, e: Entry) -> None:
        self.tracker.start_trial(e.number, e.point, running=True)
        for step, metrics in e.reports:
            self.tracker.log_step(e.number, step, metrics)
        self.tracker.finish_trial(e.result)

    def front(self, e: Entry) -> None:
        self.tracker.update_front(e.ranks, e.hypervolume, e.finished)


@dataclass
class Plain:
    """What the unbatched logger keeps: its runs, the tags they hold, the front's designs."""

    client: Any
    study: str
    constraints: Sequence[Any]
    objectives: Sequence[Any]
    experiment_id: str = ""
    parent_id: str = ""
    runs: dict[int, str] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # run id -> tags
    designs: dict[int, Design] = field(default_factory=dict)


def set_tags_unbatched(s: Plain, run_id: str, tags: dict[str, str]) -> None:
    held = s.tags.setdefault(run_id, {})
    for key, value in tags.items():
        if held.get(key) != value:
            s.client.set_tag(run_id, *layout.tag(key, value))
            held[key] = value


def log_trial_unbatched(s: Plain, e: Entry) -> None:
    """start_trial + log_step per report + finish_trial, one client call per value."""
    c, number, result = s.client, e.number, e.result
    run_id = c.create_run(s.experiment_id, run_name=layout.trial_run_name(number)).info.run_id
    s.runs[number] = run_id
    set_tags_unbatched(s, run_id, {layout.KIND: "trial", layout.STUDY: s.study, layout.TRIAL: str(number),
                                   layout.PARENT: s.parent_id, layout.RECORDER: recorder_id(),
                                   "status": "running", "config_hash": e.point.config_hash})
    for key, value in layout.point_params(e.point.canonical()).items():
        c.log_param(run_id, key, value)
    c.log_text(run_id, dump_yaml(e.point.to_yaml_data()), "point.yaml")
    logged = set()
    for step, metrics in [*e.reports, *result.history]:  # reports while training, then the rest
        for name, value in metrics.items():
            if (name, step) not in logged:
                c.log_metric(run_id, name, float(value), timestamp=int(time.time() * 1000), step=step)
                logged.add((name, step))
    c.set_terminated(run_id, layout.RUN_STATUS[result.status])
    ok = feasible(result.metrics, s.constraints)
    s.designs[number] = Design(number, dict(result.metrics), result.pareto_rank, result.config.canonical(),
                               result.config_hash, run_id)
    set_tags_unbatched(s, run_id, {"status": result.status, "steps": str(result.steps),
                                   "config_hash": result.config_hash, "feasible": "true" if ok else "false",
                                   **layout.pareto_tags(result.pareto_rank, result.status),
                                   layout.SYNCED: "true"})


def front_files(designs: list[Design], objectives: Sequence[Any], study: str, e: Entry) -> dict[str, bytes]:
    """What update_front renders (as `StudyTracker._log_front_files` does)."""
    title = f"{study}: Pareto front after {e.finished} trials"
    return {"pareto.csv": pareto_csv(designs, objectives).encode(),
            "pareto.html": pareto_html(designs, objectives, title, e.hypervolume).encode(),
            "pareto.png": pareto_png(designs, objectives, title)}


def log_front_unbatched(s: Plain, e: Entry) -> None:
    """update_front, one client call per value (and per file)."""
    for number, run_id in s.runs.items():
        set_tags_unbatched(s, run_id, layout.pareto_tags(e.ranks.get(number), "complete"))
    for number, design in s.designs.items():
        s.designs[number] = replace(design, rank=e.ranks.get(number))
    stamp = int(time.time() * 1000)
    front = sum(1 for r in e.ranks.values() if r == 0)
    for name, value in (("hypervolume", e.hypervolume), ("pareto_size", front),
                        ("finished_trials", e.finished)):
        s.client.log_metric(s.parent_id, name, float(value), timestamp=stamp, step=e.finished)
    with tempfile.TemporaryDirectory(prefix="vlmsearch-front-") as folder:
        for name, data in front_files(list(s.designs.values()), s.objectives, s.study, e).items():
            (Path(folder) / name).write_bytes(data)
            s.client.log_artifact(s.parent_id, str(Path(folder) / name))


class Unbatched:
    name = "unbatched"

    def __init__(self, uri: str, study: str, space: Any, text: str) -> None:
        self.client = Counted(open_client(uri))
        self.s = Plain(self.client, study, list(space.constraints), list(space.objectives))
        root = artifact_root(uri)
        self.s.experiment_id = self.experiment_id = self.client.create_experiment(
            study, artifact_location=f"{root}/{study}" if root else None, tags={layout.STUDY: study})
        parent = self.client.create_run(self.experiment_id, run_name=study,
                                        tags={layout.KIND: "study", layout.STUDY: study})
        self.s.parent_id = parent.info.run_id
        self.client.log_text(self.s.parent_id, text, "space.yaml")

    def trial(self, e: Entry) -> None:
        log_trial_unbatched(self.s, e)

    def front(self, e: Entry) -> None:
        log_front_unbatched(self.s, e)


def timed(variant: Batched | Unbatched, action: Callable[[Entry], None], e: Entry) -> tuple[float, int]:
    before = variant.client.calls
    start = time.perf_counter()
    action(e)
    return (time.perf_counter() - start) * 1000, variant.client.calls - before


def measure(uri: str, space: Any, text: str, entries: list[Entry]) -> dict[str, Timings]:
    batched = Batched(uri, "bench-batched", space, text)
    variants = [batched, Unbatched(uri, "bench-unbatched", space, text)]
    timings = {v.name: Timings() for v in variants}
    for i, e in enumerate(entries):
        for v in variants if i % 2 == 0 else variants[::-1]:
            t = timings[v.name]
            ms, calls = timed(v, v.trial, e)
            t.trial_ms.append(ms)
            t.trial_calls.append(calls)
            ms, calls = timed(v, v.front, e)
            t.front_ms.append(ms)
            t.front_calls.append(calls)
        tracker = batched.tracker
        start = time.perf_counter()
        front_files(list(tracker.designs.values()), tracker.objectives, tracker.study, e)
        timings["batched"].render_ms.append((time.perf_counter() - start) * 1000)
    check_same(batched.client, batched.experiment_id, variants[1].experiment_id, len(entries))
    return timings


def check_same(client: Any, batched: str, unbatched: str, n: int) -> None:
    """Both variants logged the same thing (run-specific and system tags aside)."""
    def runs(experiment_id: str) -> dict[str, Any]:
        found = client.search_runs([experiment_id], f"tags.`{layout.KIND}` = 'trial'", max_results=1000)
        return {r.data.tags[layout.TRIAL]: r for r in found}

    def tags(run: Any) -> dict[str, str]:
        return {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") and k != layout.STUDY}

    a, b = runs(batched), runs(unbatched)
    assert len(a) == len(b) == n, (len(a), len(b), n)
    for number, run in a.items():
        other = b[number]
        assert run.data.params == other.data.params, number
        assert run.data.metrics == other.data.metrics, number
        assert tags(run) == tags(other), (number, tags(run), tags(other))
        assert run.info.status == other.info.status == "FINISHED", number
    last = max(a, key=int)
    assert len(client.get_metric_history(a[last].info.run_id, "accuracy")) == \
        len(client.get_metric_history(b[last].info.run_id, "accuracy")) == len(STEPS) + 1


def with_server(folder: Path, run: Callable[[str], dict[str, Timings]]) -> dict[str, Timings]:
    port, log_path = free_port(), folder / "server.log"
    with open(log_path, "w", encoding="utf-8") as log:  # started as `vlmsearch dashboard` starts it
        process = start_server(f"sqlite:///{folder}/mlflow.db", "127.0.0.1", port, folder / "mlartifacts",
                               output=log)
    try:
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(process, base, timeout_s=240)
        except DashboardError:
            sys.stderr.write(log_path.read_text(encoding="utf-8")[-4000:])
            raise
        return run(base)
    finally:
        stop_server(process)


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--backend", choices=("sqlite", "server", "both"), default="both")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    space, text, entries = plan(args.trials)
    pareto_png([Design(0, {"accuracy": 0.5, "visual_tokens": 16.0}, 0)], space.objectives, "warm-up")
    results: dict[str, dict[str, Timings]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        if args.backend in ("sqlite", "both"):
            folder = Path(tmp) / "sqlite"
            folder.mkdir()
            results["sqlite"] = measure(f"sqlite:///{folder}/mlflow.db", space, text, entries)
        if args.backend in ("server", "both"):
            folder = Path(tmp) / "server"
            folder.mkdir()
            results["server"] = with_server(folder, lambda uri: measure(uri, space, text, entries))
    params = statistics.mean(len(layout.point_params(e.point.canonical())) for e in entries)
    metrics = len(entries[0].result.metrics)
    print(f"{args.trials} trials per variant, the variants interleaved per trial; a trial: {params:.1f} "
          f"params (mean), {metrics} metrics x {len(STEPS) + 1} steps, tags, point.yaml")
    print("ms: median over trials; calls: client calls, mean per trial; ratio: unbatched / batched")
    print(f"{'backend':<9}{'variant':<11}{'trial ms':>10}{'calls':>7}{'ms/call':>9}{'front ms':>10}"
          f"{'calls':>7}{'trial+front ms':>16}")
    for backend, by_variant in results.items():
        row = {}
        for name, t in by_variant.items():
            both = [a + b for a, b in zip(t.trial_ms, t.front_ms, strict=True)]
            row[name] = (median(t.trial_ms), statistics.mean(t.trial_calls), median(t.front_ms),
                         statistics.mean(t.front_calls), median(both))
            trial, calls, front, front_calls, total = row[name]
            print(f"{backend:<9}{name:<11}{trial:>10.1f}{calls:>7.1f}{trial / calls:>9.1f}{front:>10.1f}"
                  f"{front_calls:>7.1f}{total:>16.1f}")
        a, b = row["batched"], row["unbatched"]
        print(f"{backend:<9}{'ratio':<11}{b[0] / a[0]:>9.2f}x{b[1] / a[1]:>6.1f}x{'':>9}{b[2] / a[2]:>9.2f}x"
              f"{b[3] / a[3]:>6.1f}x{b[4] / a[4]:>15.2f}x")
    for backend, by_variant in results.items():
        print(f"{backend}: of update_front, rendering pareto.csv/html/png alone (no MLflow, same designs, "
              f"in the same loop): median {median(by_variant['batched'].render_ms):.1f} ms")

if __name__ == "__main__":
    main()
