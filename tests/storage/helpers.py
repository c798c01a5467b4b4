"""Shared by the store's tests: a small space, synthetic results, a writer process."""

from __future__ import annotations

import sys
import time

import numpy as np

from search_space import RandomDraw, compile_space, parse
from search_space.events import StudyInfo
from search_space.result import Failure, TrialResult
from tests.trials.search.search_helpers import SMALL_SPACE

SPACE = SMALL_SPACE
LOADED = parse(SPACE)
COMPILED = compile_space(LOADED.space)


def info(name: str = "small", text: str = SPACE) -> StudyInfo:
    return StudyInfo(name, parse(text).space, text, {"backend": "optuna", "sampler": "tpe"})


def result(study: str, number: int, *, status: str | None = None) -> TrialResult:
    """A deterministic synthetic result of trial `number`: ten final metrics, two reports."""
    rng = np.random.default_rng(number)
    point = COMPILED.sample(RandomDraw(number))
    status = status or str(rng.choice(["complete"] * 6 + ["pruned", "failed"]))
    steps = {"complete": 12, "pruned": 4, "failed": int(rng.integers(0, 12))}[status]
    accuracy = float(rng.uniform(0.1, 0.9))
    metrics = {"accuracy": accuracy, "accuracy/color": float(rng.uniform()),
               "accuracy/shape": float(rng.uniform()),
               "visual_tokens": int(rng.choice([4, 16, 20, 32])), "positions_used": int(rng.integers(1, 17)),
               "trainable_params": int(rng.integers(80_000, 120_000)), "total_params": 250_000,
               "latency_ms": float(rng.uniform(2, 9)), "peak_mem_mb": float(rng.uniform(500, 700)),
               "train_time_s": float(rng.uniform(0.2, 2))}
    failure = Failure(str(rng.choice(["nan", "oom", "error"])), f"trial {number} failed") \
        if status == "failed" else None
    if failure is not None:
        metrics = {}
    history = [(4, {"accuracy": accuracy * 0.9, "visual_tokens": metrics.get("visual_tokens", 16)})]
    return TrialResult(point, status, steps, metrics, failure, history, study=study, number=number,
                       host=f"node-{number % 3}")


def record(store: object, study: str, number: int, pause: float = 0.0, **kw: object) -> TrialResult:
    """What a search tells a sink about one trial, start to finish (`pause`: training time)."""
    r = result(study, number, **kw)  # type: ignore[arg-type]
    store.trial_started(study, number, r.config)  # type: ignore[attr-defined]
    for step, values in r.history:
        store.trial_intermediate(study, number, step, values)  # type: ignore[attr-defined]
    time.sleep(pause)
    store.trial_finished(study, r)  # type: ignore[attr-defined]
    return r


def write(url: str, study: str, numbers: list[int], delay: float = 0.0) -> None:
    """A writer process: open the store, start the study, record `numbers`; numbers already
    finished are replayed, as a resumed search does."""
    from storage import ResultsStore

    store = ResultsStore(url)
    store.study_started(info(study))
    done = {t.number for t in store.trials(study) if t.status != "running"}
    for number in numbers:
        if number in done:
            store.trial_finished(study, result(study, number))  # a replay, as a resumed search does
            continue
        record(store, study, number, pause=delay)
    store.close()


if __name__ == "__main__":  # python -m tests.storage.helpers URL STUDY FIRST LAST DELAY
    url, study, first, last, delay = sys.argv[1:6]
    write(url, study, list(range(int(first), int(last))), float(delay))
