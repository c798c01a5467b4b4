"""Training a fixed list of design points in `concurrency` worker processes, with no sampler and no
study: what `vlmsearch validate` runs (each design again, at a larger budget, with several seeds).

The workers are the search's own (`init_worker`: torch threads and one feature cache per
process); each point is run by `run_trial`, so a failure is a failed result, never an exception.
A sink hears when each point starts (it got a worker) and finishes. Ctrl-C stops the workers at
once and is raised again for the caller, which knows which points were running.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Protocol, TypeVar

from search_space import Failure, Resources, TrialConfig, TrialResult
from trials.search.worker import init_worker, stop_workers

K = TypeVar("K", bound=Hashable)


class PointSink(Protocol[K]):
    def point_started(self, key: K, point: TrialConfig) -> None: ...
    def point_finished(self, key: K, result: TrialResult) -> None: ...


def train_one(point: TrialConfig, device: str, resources: Resources) -> TrialResult:
    """In a worker: train `point` as it is (its own train.steps and seed), with the worker's cache."""
    from trials.outcome import TrialOptions, run_trial
    from trials.search import worker

    return run_trial(point, TrialOptions(device=device, cache=worker._CACHE, resources=resources))


def train_points(jobs: Sequence[tuple[K, TrialConfig]], sink: PointSink[K], *, cache_dir: Path,
                 concurrency: int = 1, device: str = "auto", resources: Resources | None = None
                 ) -> dict[K, TrialResult]:
    """Train every point of `jobs` (in order, `concurrency` at a time); the results by key."""
    resources = resources or Resources()
    trains_vlm = any(point.trains_vlm for _, point in jobs)
    threads = max(1, int(resources.cpu))
    pending, running, results = list(jobs), {}, {}
    pool = ProcessPoolExecutor(max(1, concurrency), mp_context=mp.get_context("spawn"),
                               initializer=init_worker, initargs=(threads, str(cache_dir), trains_vlm))
    try:
        while pending or running:
            while pending and len(running) < max(1, concurrency):
                key, point = pending.pop(0)
                sink.point_started(key, point)
                running[pool.submit(train_one, point, device, resources)] = (key, point)
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                key, point = running.pop(future)
                results[key] = _result(future, point)
                sink.point_finished(key, results[key])
    finally:
        stop_workers(pool)  # idle by now, or interrupted: no need to wait for their exit
    return results


def _result(future: Future[TrialResult], point: TrialConfig) -> TrialResult:
    try:
        return future.result()
    except Exception as exc:  # the worker process itself died
        return TrialResult(point, "failed", 0, failure=Failure("error", f"worker process failed: {exc}"))
