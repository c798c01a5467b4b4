"""The results store at 10,000 trials: SQLite and PostgreSQL side by side.

    python bench/store.py [--trials 10000] [--postgres URL]

Records `--trials` synthetic trials with 10 final metrics each through the sink, as a search
does (trial_started, then trial_finished: one transaction each), stores the front once, then
times the queries: the Pareto front from the stored ranks (what `vlmsearch results --pareto`
runs), the same front recomputed from the stored metrics, every trial with its metrics, and the
studies with their counts. PostgreSQL: `--postgres URL` (an empty database), else
$VLMSEARCH_TEST_POSTGRES's server, else a throwaway local server with default (durable) settings.
SQLite runs with the store's settings: WAL, synchronous=NORMAL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from search_space import RandomDraw, TrialResult, compile_space, parse, study_front
from storage import ResultsStore, to_json
from storage.testing import LocalPostgres, create_database, drop_database

SPACE = """\
name: bench
data: {benchmark: probe, train_size: 400, eval_size: 100, image_size: 96, seed: 0}
experts:
  pool:
    clip: {source: tiny-clip, tokens: {choices: [4, 16, 64]}}
    dinov2: {source: tiny-dinov2, tokens: {choices: [16, 64]}}
    sam: {source: tiny-sam, image_size: 128, tokens: 16}
  subset: {min: 1, max: 3}
fusion: {choices: [{kind: channel_concat}, {kind: sequence_concat}, {kind: resampler, queries: 16}]}
positions: {choices: [original, share_all, share_by_row]}
train: {steps: 300, batch_size: 32, lr: {low: 1.0e-4, high: 3.0e-3, log: true}}
objectives:
  - {metric: accuracy, direction: maximize}
  - {metric: visual_tokens, direction: minimize}
  - {metric: latency_ms, direction: minimize}
constraints: [{metric: visual_tokens, max: 128}]
"""


class Info:  # the StudyInfo fields the store reads
    name, space_yaml, settings = "bench", SPACE, {"backend": "bench"}


def results(n: int) -> list[TrialResult]:
    """`n` complete trials, 10 final metrics each (accuracy and visual tokens trade off)."""
    compiled, rng = compile_space(parse(SPACE).space), np.random.default_rng(0)
    out = []
    for number in range(n):
        tokens = int(rng.choice([4, 16, 20, 32, 64, 80, 96, 144]))
        accuracy = float(np.clip(0.3 + 0.1 * np.log2(tokens) + rng.normal(0, 0.1), 0, 1))
        metrics = {"accuracy": accuracy, "accuracy/color": float(rng.uniform()),
                   "accuracy/shape": float(rng.uniform()),
                   "visual_tokens": tokens, "positions_used": int(rng.integers(1, tokens + 1)),
                   "trainable_params": int(rng.integers(80_000, 300_000)), "total_params": 500_000,
                   "latency_ms": float(rng.uniform(2, 20)), "peak_mem_mb": float(rng.uniform(500, 900)),
                   "train_time_s": float(rng.uniform(10, 60))}
        out.append(TrialResult(compiled.sample(RandomDraw(number)), "complete", 300, metrics,
                               study="bench", number=number))
    return out


def median_s(action: Callable[[], Any], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(url: str, done: list[TrialResult]) -> dict[str, float]:
    store = ResultsStore(url)
    store.study_started(Info())
    start = time.perf_counter()
    for r in done:
        store.trial_started("bench", r.number or 0, r.config)
        store.trial_finished("bench", r)
    recorded = time.perf_counter() - start
    space = parse(SPACE).space
    ranks, volume = study_front([r.metrics for r in done], space.objectives, space.constraints)
    front = SimpleNamespace(ranks=dict(enumerate(ranks)), hypervolume=volume, finished=len(done))
    start = time.perf_counter()
    store.front_updated("bench", front)
    ranked = time.perf_counter() - start
    found = store.pareto_front("bench")
    assert not found.recomputed
    assert {t.number for t in found.trials} == {n for n, r in enumerate(ranks) if r == 0}
    row = {"record": recorded, "per trial ms": recorded / len(done) * 1000, "store ranks": ranked,
           "pareto query": median_s(lambda: store.pareto_front("bench")),
           "pareto recomputed": median_s(lambda: store.pareto_front("bench", recompute=True), 1),
           "all trials": median_s(lambda: store.trials("bench"), 3),
           "json export": median_s(lambda: to_json(store.trials("bench")), 1),
           "studies": median_s(store.studies), "front size": float(len(found.trials))}
    store.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--postgres", help="an empty PostgreSQL database (default: a throwaway server)")
    args = parser.parse_args()
    done = results(args.trials)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = measure(f"sqlite:///{tmp}/results.db", done)
    if args.postgres:
        postgres = measure(args.postgres, done)
    elif os.environ.get("VLMSEARCH_TEST_POSTGRES"):
        server, name = os.environ["VLMSEARCH_TEST_POSTGRES"], f"bench_{uuid.uuid4().hex[:8]}"
        postgres = measure(create_database(server, name), done)
        drop_database(server, name)
    else:
        with LocalPostgres(durable=True) as local:
            postgres = measure(local.create_database("bench"), done)
    print(f"{args.trials} trials x 10 metrics; front of {sqlite['front size']:.0f} trials (3 objectives)")
    print(f"{'':<22}{'SQLite':>12}{'PostgreSQL':>12}{'PG/SQLite':>11}")
    rows = (("record", "s"), ("per trial ms", "ms"), ("store ranks", "s"), ("pareto query", "ms"),
            ("pareto recomputed", "s"), ("all trials", "s"), ("json export", "s"), ("studies", "ms"))
    for key, unit in rows:
        scale = 1000 if unit == "ms" and key != "per trial ms" else 1
        a, b = sqlite[key] * scale, postgres[key] * scale
        print(f"{key + ' (' + unit + ')':<22}{a:>12.3f}{b:>12.3f}{b / a:>10.2f}x")


if __name__ == "__main__":
    main()
