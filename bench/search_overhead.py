"""Overhead of each search backend over a bare loop running the same trials, side by side.

    python bench/search_overhead.py [--trials 6] [--steps 40]

The same `--trials` designs run three ways, one at a time: a bare Python loop calling
`run_trial`, the Optuna backend and the Ray backend (the designs given as seed points, so both
backends run exactly them). All three share one feature cache, warmed first, so what differs
is orchestration: worker processes, the SQL study, Ray's start-up and scheduling.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from search_space import RandomDraw, compile_space, parse
from search_space.space import SeedPoint
from trials.cache import FeatureCache
from trials.search.optuna_backend import OptunaBackend
from trials.search.ray_backend import RayBackend
from trials.search.sinks import Sinks
from trials.search.study import SearchSpec
from trials.train import TrialOptions, run_trial

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
search: {sampler: random, trials: TRIALS, concurrency: 1, early_stopping: {kind: none}}
"""


def designs(text: str, n: int) -> list:
    compiled, points, seed = compile_space(parse(text).space), {}, 0
    while len(points) < n:
        point = compiled.sample(RandomDraw(seed))
        points.setdefault(point.config_hash, point)
        seed += 1
    return list(points.values())


def search_spec(text: str, points: list, root: Path, study: str) -> SearchSpec:
    space = parse(text).space
    seeds = [{k: v for k, v in p.canonical().items() if k in ("experts", "fusion", "positions", "train")}
             for p in points]
    search = space.search.model_copy(update={"seed_points": [SeedPoint.model_validate(s) for s in seeds]})
    space = space.model_copy(update={"search": search})
    return SearchSpec(study=study, space=space, space_yaml=text, trials=len(points), concurrency=1,
                      storage=f"sqlite:///{root}/bench.db", run_dir=root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    text = SPACE.replace("STEPS", str(args.steps)).replace("TRIALS", str(args.trials))
    points = designs(text, args.trials)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for p in points:  # warm the shared disk cache
            run_trial(p, TrialOptions(steps=1, cache=FeatureCache(root / "cache")))
        start = time.perf_counter()
        bare = [run_trial(p, TrialOptions(cache=FeatureCache(root / "cache"))) for p in points]
        t_bare = time.perf_counter() - start
        times = {}
        for name, backend in (("optuna", OptunaBackend), ("ray", RayBackend)):
            spec = search_spec(text, points, root, f"overhead-{name}")
            start = time.perf_counter()
            runner = backend(spec, Sinks([]))
            runner.prepare()
            state = runner.run()
            times[name] = time.perf_counter() - start
            trained = {r.config_hash for r in state.results.values()}
            assert trained == {p.config_hash for p in points}, f"{name} ran other designs"
    assert all(r.status == "complete" for r in bare)
    print(f"{args.trials} trials x {args.steps} steps, concurrency 1, warm feature cache")
    print(f"bare loop  {t_bare:7.1f} s   1.00x")
    for name, seconds in times.items():
        print(f"{name:<10} {seconds:7.1f} s   {seconds / t_bare:.2f}x   "
              f"(+{(seconds - t_bare) / args.trials:.1f} s per trial)")


if __name__ == "__main__":
    main()
