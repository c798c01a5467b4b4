"""The process side of a search: run one trial, sending reports to the driver and waiting for
its continue/stop answer."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from search_space import Resources, TrialConfig, TrialResult

_CACHE: Any = None
REPLY_TIMEOUT_S = 600


def ignore_ctrl_c() -> None:
    """Ctrl-C is the driver's to handle: it marks the running trials and stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def init_worker(threads: int, cache_dir: str, trains_vlm: bool = True) -> None:
    """Per worker process: torch threads (the trial's cpu share) and one feature cache, whose
    memory part then serves every trial this worker runs. A non-VLM evaluator's worker imports
    no torch."""
    ignore_ctrl_c()
    if not trains_vlm:
        return
    import torch

    from trials.cache import FeatureCache

    global _CACHE
    torch.set_num_threads(max(1, threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _CACHE = FeatureCache(cache_dir)


def run_one(number: int, point: TrialConfig, steps: int | None, device: str,
            report_at: frozenset[int], events: Any, reply: Any,
            resources: Resources | None = None) -> TrialResult:
    """Train `point`; each report goes to `events` and waits for True (stop) / False on `reply`."""
    from trials.outcome import TrialOptions, run_trial

    def report(step: int, metrics: dict[str, float]) -> bool:
        events.put(("report", number, step, metrics))
        try:
            return bool(reply.get(timeout=REPLY_TIMEOUT_S))
        except Exception:  # the driver is gone: keep training; its result is retried on resume
            return False

    result = run_trial(point, TrialOptions(steps=steps, device=device, cache=_CACHE, report=report,
                                           report_at=report_at, resources=resources or Resources()))
    result.number = number
    return result


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's processes at once: idle ones after the last trial (joining them costs seconds
    of interpreter teardown), or an interrupted search's."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
