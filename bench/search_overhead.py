"""Overhead of each search backend over a bare loop running the same trials, side by side.

    python bench/search_overhead.py [--trials 6] [--steps 40] [--threads 1] [--backends optuna,ray]

The same `--trials` designs run three ways, one at a time: a bare Python loop calling
`run_trial`, the Optuna backend and the Ray backend (the designs given as seed points, so both
backends run exactly them, in the same order). All three share one feature cache, warmed first,
and the same torch thread count (`--threads`: OMP_NUM_THREADS for every process, the bare loop's
`torch.set_num_threads`, and `search.resources.cpu`, from which the Optuna workers set theirs and
Ray sizes its trials), so what differs is orchestration.

A sink timestamps each trial's start and end in the driver. Per-trial overhead: the median over
trials 2..N of (the wall time between two trials' ends) - (the bare loop's time for the same
design): the "(raw)" column. The "per trial" column also takes out the difference in the trials'
own training time (each result reports it), what varies most with the machine's load; "spread"
is its max - min. One-time start: total - bare total - N x per-trial overhead, split into before
the first trial (study, Ray start), the first trial's extra (worker spawn, imports; negative when
part of every trial's cost, like Ray's new process per trial, falls before the first start event)
and after the last (shutdown). Heavy imports live in functions: a spawned worker (and the Optuna
backend's SyncManager process) re-runs this module's top level, and should not pay for them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
GOAL_S = {"optuna": 0.3, "ray": 0.5}  # the project's per-trial overhead goals

SPACE = """\
name: overhead
data: {benchmark: probe, train_size: 400, eval_size: 100, image_size: 96, seed: 0}
experts:
  pool:
    clip: {source: tiny-clip, tokens: {choices: [16, 64]}}
    dinov2: {source: tiny-dinov2, tokens: 64}
  subset: {min: 1, max: 2}
fusion: {choices: [{kind: channel_concat}, {kind: sequence_concat}, {kind: resampler, queries: 16}]}
positions: {choices: [original, share_by_row]}
train: {steps: STEPS, batch_size: 32, lr: 1.0e-3}
objectives: [{metric: accuracy, direction: maximize}, {metric: visual_tokens, direction: minimize}]
search:
  {sampler: random, trials: TRIALS, concurrency: 1, early_stopping: {kind: none}, resources: {cpu: THREADS}}
"""


def set_threads(threads: int) -> None:
    """Before torch is imported here; spawned workers and Ray's inherit the environment."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(threads)


def designs(text: str, n: int) -> list:
    from search_space import RandomDraw, compile_space, parse

    compiled, points, seed = compile_space(parse(text).space), {}, 0
    while len(points) < n:
        point = compiled.sample(RandomDraw(seed))
        points.setdefault(point.config_hash, point)
        seed += 1
    return list(points.values())


def search_spec(text: str, points: list, root: Path, study: str) -> Any:
    from search_space import SeedPoint, parse
    from trials import SearchSpec

    space = parse(text).space
    seeds = [{k: v for k, v in p.canonical().items() if k in ("experts", "fusion", "positions", "train")}
             for p in points]
    search = space.search.model_copy(update={"seed_points": [SeedPoint.model_validate(s) for s in seeds]})
    space = space.model_copy(update={"search": search})
    return SearchSpec(study=study, space=space, space_yaml=text, trials=len(points), concurrency=1,
                      storage=f"sqlite:///{root}/bench.db", run_dir=root)


class Clock:
    """A sink that notes when each trial starts and ends (driver side)."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.finished: dict[int, float] = {}
        self.results: dict[int, Any] = {}

    def study_started(self, study: Any) -> None: ...
    def trial_intermediate(self, study: str, number: int, step: int, metrics: dict) -> None: ...
    def front_updated(self, study: str, front: Any) -> None: ...
    def study_finished(self, study: str, status: str) -> None: ...

    def trial_started(self, study: str, number: int, point: Any) -> None:
        self.started.setdefault(number, time.perf_counter())

    def trial_finished(self, study: str, result: Any) -> None:
        self.finished.setdefault(result.number, time.perf_counter())
        self.results[result.number] = result


def bare_loop(points: list, root: Path) -> tuple[float, list[float], list[float]]:
    """Total, per-trial wall times and training times; one feature cache, like a worker's."""
    from trials import FeatureCache, TrialOptions, run_trial

    for p in points:  # warm the shared disk cache, and this process's imports and data
        run_trial(p, TrialOptions(steps=1, cache=FeatureCache(root / "cache")))
    cache, walls, trains = FeatureCache(root / "cache"), [], []
    start = time.perf_counter()
    for p in points:
        t = time.perf_counter()
        result = run_trial(p, TrialOptions(cache=cache))
        walls.append(time.perf_counter() - t)
        trains.append(result.metrics.get("train_time_s", 0.0))
        assert result.status == "complete", result.failure
    return time.perf_counter() - start, walls, trains


def run_backend(name: str, spec: Any, threads: int) -> tuple[float, float, Clock]:
    """Total seconds (Ray's start included), the time before the backend's own start, the clock."""
    from search_space import Sinks

    clock = Clock()
    begin = time.perf_counter()
    if name == "ray":
        import ray

        from trials import RayBackend as Backend
        ray.init(num_cpus=max(2, threads), include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
    else:
        from trials import OptunaBackend as Backend
    runner = Backend(spec, Sinks([clock]))
    runner.prepare()
    runner.run()
    total = time.perf_counter() - begin
    if name == "ray":
        ray.shutdown()
    return total, begin, clock


def breakdown(total: float, begin: float, clock: Clock, hashes: list[str], walls: list[float],
              trains: list[float]) -> dict[str, float]:
    """Per-trial overhead (raw and train-time adjusted) and the one-time start, in seconds."""
    numbers = sorted(clock.finished)
    order = [hashes.index(clock.results[n].config_hash) for n in numbers]  # design of each trial
    ends = [clock.finished[n] for n in numbers]
    raw, adjusted = [], []
    for i in range(1, len(numbers)):
        j, gap = order[i], ends[i] - ends[i - 1]
        raw.append(gap - walls[j])
        trained = clock.results[numbers[i]].metrics.get("train_time_s", trains[j])
        adjusted.append((gap - trained) - (walls[j] - trains[j]))
    per_raw = statistics.median(raw) if raw else float("nan")
    per = statistics.median(adjusted) if adjusted else per_raw
    one_time = total - sum(walls) - len(numbers) * per
    before = clock.started[numbers[0]] - begin
    after = begin + total - ends[-1]
    return {"total": total, "per_trial": per, "per_trial_raw": per_raw, "spread": max(adjusted, default=0)
            - min(adjusted, default=0), "one_time": one_time, "before": before, "after": after,
            "first_extra": one_time - before - after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every process (default 1)")
    parser.add_argument("--backends", default="optuna,ray", help="comma-separated: optuna, ray")
    parser.add_argument("--verbose", action="store_true", help="also print each trial's times")
    args = parser.parse_args()
    load_start = os.getloadavg()
    set_threads(args.threads)
    text = (SPACE.replace("STEPS", str(args.steps)).replace("TRIALS", str(args.trials))
            .replace("THREADS", str(args.threads)))
    points = designs(text, args.trials)
    hashes = [p.config_hash for p in points]
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t_bare, walls, trains = bare_loop(points, root)
        loads = {"bare": os.getloadavg()[0]}
        for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
            spec = search_spec(text, points, root, f"overhead-{name}")
            total, begin, clock = run_backend(name, spec, args.threads)
            trained = {r.config_hash for r in clock.results.values()}
            assert trained == set(hashes), f"{name} ran other designs"
            rows[name] = breakdown(total, begin, clock, hashes, walls, trains)
            loads[name] = os.getloadavg()[0]
            if args.verbose:
                for n in sorted(clock.finished):
                    r = clock.results[n]
                    print(f"  {name} trial {n}: {clock.finished[n] - clock.started[n]:6.2f} s start->end, "
                          f"train {r.metrics.get('train_time_s', 0):5.2f} s, "
                          f"bare {walls[hashes.index(r.config_hash)]:5.2f} s")
    print(f"{args.trials} trials x {args.steps} steps, concurrency 1, {args.threads} torch thread(s), "
          f"warm feature cache; {os.cpu_count()} CPUs")
    print("load average (1, 5, 15 min) at start: " + ", ".join(f"{x:.2f}" for x in load_start))
    print(f"{'':<10} {'total':>7} {'x bare':>6} {'per trial':>10} {'(raw)':>6} {'spread':>6} {'one-time':>8}"
          f" {'= before':>8} {'+ 1st trial':>11} {'+ after':>7}  load")
    print(f"{'bare loop':<10} {t_bare:7.1f} {1:6.2f} {statistics.mean(walls):9.2f}s"
          f" {'':>6} {'':>6} {'':>8} {'':>8} {'':>11} {'':>7}  {loads['bare']:.2f}")
    for name, r in rows.items():
        goal = "ok" if r["per_trial"] <= GOAL_S[name] else f"goal {GOAL_S[name]:g}"
        print(f"{name:<10} {r['total']:7.1f} {r['total'] / t_bare:6.2f} {r['per_trial']:+9.2f}s"
              f" {r['per_trial_raw']:+6.2f} {r['spread']:6.2f} {r['one_time']:8.1f} {r['before']:8.1f}"
              f" {r['first_extra']:11.1f} {r['after']:7.1f}  {loads[name]:.2f}  {goal}")
    if {"optuna", "ray"} <= rows.keys():
        o, r = rows["optuna"], rows["ray"]
        print(f"ray / optuna: total {r['total'] / o['total']:.2f}x, per-trial overhead "
              f"{_ratio(r['per_trial'], o['per_trial'])}, one-time {_ratio(r['one_time'], o['one_time'])}")
    print("load average (1, 5, 15 min) at end:   " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0.01 else f"{a:+.2f} s vs {b:+.2f} s"


if __name__ == "__main__":
    main()
