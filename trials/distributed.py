"""One trial on several data-parallel processes (`search.resources.workers`, or `gpu` > 1).

The process that runs the trial (an Optuna-backend worker, or a direct `run_trial`) becomes the
trial's supervisor: it starts `world` ranks with torch.multiprocessing (forkserver: each a fork
of one clean server that imported torch once; as safe for CUDA as spawn), each joining one torch.distributed
group (gloo on CPU, nccl on `cuda:<rank>`, rendezvous on a free loopback port, a timeout on every
collective) and calling `train_vlm` on its device with `Distributed` ranks. Callbacks cannot be
pickled into another process, so rank 0 sends its reports and progress over a queue and waits for
the supervisor's stop/continue answer, exactly as one process would. The supervisor never joins a
collective, so it can always tell what happened: rank 0's result is the trial's; a rank that
fails or dies fails the trial with a message naming it, and the other ranks are stopped.

The Ray backend runs the same ranks through Ray Train instead (`trials.search.ray_train`); both
share the feature cache rule (`TakingTurns`) and the way rank outcomes become one result
(`combine`).
"""

from __future__ import annotations

import datetime
import fcntl
import multiprocessing.connection
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as tmp

from search_space import Failure, TrialConfig, TrialResult
from trials.cache import Batches, FeatureCache, Layers
from trials.outcome import TrialOptions
from trials.parallel import Distributed

__all__ = ["GRACE_S", "TIMEOUT_S", "Outcome", "RankJob", "TakingTurns", "combine", "exit_reason",
           "free_port", "rank_device", "rank_job", "rank_options", "train_data_parallel"]

TIMEOUT_S = 1800.0  # a collective no rank completes in this long fails (torch's default)
GRACE_S = 120.0     # after another rank failed, how long rank 0 may take to end on its own
POLL_S = 0.1
Train = Callable[[TrialConfig, TrialOptions, Distributed], TrialResult]


class TakingTurns(FeatureCache):
    """The on-disk feature cache as the ranks of one trial share it: the first rank to ask for
    an entry computes it while the others wait on a lock file beside it, then read it (no rank
    computes what another is computing). Without a writable root, each rank computes its own."""

    def get_batches(self, key: str, batches: Batches, rows: int | None) -> Layers:
        if self.root is None:
            return super().get_batches(key, batches, rows)
        try:
            lock = open(self.root / f"{key}.lock", "w")  # noqa: SIM115 (held across the body)
        except OSError:
            return super().get_batches(key, batches, rows)
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # freed when the file closes or the process dies
            return super().get_batches(key, batches, rows)


@dataclass
class Outcome:
    """What the ranks of one trial ended with: results as they arrived, and ranks that died
    (exit code) without one."""

    world: int
    results: dict[int, TrialResult] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    died: dict[int, str] = field(default_factory=dict)
    stopped: list[int] = field(default_factory=list)  # still running when the trial ended

    def add(self, rank: int, result: TrialResult) -> None:
        self.results[rank] = result
        self.order.append(rank)

    @property
    def settled(self) -> bool:
        """Rank 0 is done, or every rank is."""
        return 0 in self.results or 0 in self.died or \
            len(self.results) + len(self.died) == self.world

    @property
    def failing(self) -> bool:
        return bool(self.died) or any(r.status == "failed" for r in self.results.values())


def combine(outcome: Outcome, point: TrialConfig, steps: int,
            history: list[tuple[int, dict[str, float]]]) -> TrialResult:
    """One trial's result: rank 0's when it finished (complete or pruned); else the first cause,
    a rank that died before any failure that followed it, then failures as they arrived."""
    first = outcome.results.get(0)
    if first is not None and first.status != "failed":
        return first
    world = outcome.world
    if outcome.died:
        rank, why = next(iter(outcome.died.items()))
        return TrialResult(point, "failed", steps, history=history,
                           failure=Failure("error", f"rank {rank} of {world} died ({why})"))
    failed = [r for r in outcome.order if outcome.results[r].status == "failed"]
    if not failed:
        return TrialResult(point, "failed", steps, history=history,
                           failure=Failure("error", f"rank 0 of {world} gave no result"))
    result = outcome.results[failed[0]]
    failure = result.failure or Failure("error", "no message")
    message = f"rank {failed[0]} of {world}: {failure.message}"
    if outcome.stopped:
        message += f" (rank {', '.join(map(str, outcome.stopped))} had not finished: stopped)"
    return TrialResult(point, "failed", result.steps, history=history or result.history,
                       failure=Failure(failure.reason, message))


def exit_reason(code: int | None) -> str:
    """`exit code 3`, or the signal that ended a process (`killed by SIGKILL`)."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"


@dataclass(frozen=True)
class RankJob:
    """What every rank needs; plain data, so it pickles into another process. `options` are the
    trial's without its callbacks and cache (each rank opens the cache's folder itself)."""

    point: TrialConfig
    options: TrialOptions
    device: str  # cpu | cuda (each rank: cuda:<rank>) | auto (Ray Train's device)
    cache_root: str | None
    port: int
    threads: int
    progress: bool
    timeout_s: float

    @property
    def world(self) -> int:
        return self.options.resources.world_size


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rank_device(kind: str, local_rank: int) -> torch.device:
    """`cuda:<local rank>` on GPUs, the CPU otherwise."""
    return torch.device(f"cuda:{local_rank}") if kind == "cuda" else torch.device("cpu")


def train_data_parallel(point: TrialConfig, options: TrialOptions, train: Train | None = None,
                        timeout_s: float = TIMEOUT_S) -> TrialResult:
    """`point` trained on `options.resources.world_size` ranks; always a result. `train`
    replaces `train_vlm` in each rank (a module-level function: it is pickled by name)."""
    from trials.train import device_of, with_steps

    world = options.resources.world_size
    kind = device_of(options.device).type
    trained = with_steps(point, options.steps)
    if kind == "cuda" and torch.cuda.device_count() < world:
        return TrialResult(trained, "failed", 0, failure=Failure(
            "error", f"{world} data-parallel ranks need {world} GPUs; this machine sees "
                     f"{torch.cuda.device_count()} (set search.resources.gpu or workers)"))
    job = rank_job(point, options, kind, free_port(), timeout_s)
    return _Supervisor(job, options, trained).run(train)


def rank_job(point: TrialConfig, options: TrialOptions, device: str, port: int, timeout_s: float
             ) -> RankJob:
    """`options` as plain data for the ranks: the cache by its folder, callbacks by whether
    there are any, torch threads as the trial's cpu share split among its ranks."""
    cache, resources = options.cache, options.resources
    plain = replace(options, cache=None, report=None, progress=None)
    return RankJob(point, plain, device,
                   str(cache.root) if cache is not None and cache.root is not None else None,
                   port, max(1, round(resources.cpu / resources.world_size)),
                   options.progress is not None, timeout_s)


class _Supervisor:
    """Starts the ranks, relays rank 0's reports, and waits for the outcome."""

    def __init__(self, job: RankJob, options: TrialOptions, point: TrialConfig) -> None:
        self.job, self.options, self.point = job, options, point
        self.context = _context()
        self.events: Any = self.context.Queue()
        self.replies: Any = self.context.Queue()
        self.outcome = Outcome(job.world)
        self.history: list[tuple[int, dict[str, float]]] = []
        self.step = 0

    def run(self, train: Train | None) -> TrialResult:
        processes = [self.context.Process(target=_rank_main, daemon=True, name=f"rank-{rank}",
                                          args=(rank, self.job, self.events,
                                                self.replies if rank == 0 else None, train))
                     for rank in range(self.job.world)]
        for process in processes:
            process.start()
        try:
            self.wait(processes)
        finally:
            self.outcome.stopped = [rank for rank, process in enumerate(processes)
                                    if process.is_alive() and rank not in self.outcome.results]
            _stop(processes)
        return combine(self.outcome, self.point, self.step, self.history)

    def wait(self, processes: list[Any]) -> None:
        """Until rank 0 is done (or every rank is); after a failure, at most GRACE_S more."""
        deadline: float | None = None
        while not self.outcome.settled:
            self.drain(block=True)
            self.check(processes)
            if self.outcome.failing and deadline is None:
                deadline = time.monotonic() + GRACE_S
            if deadline is not None and time.monotonic() > deadline:
                return
        first = self.outcome.results.get(0)
        # rank 0 done: the others end with it; rank 0 failed: did another die first (its peers'
        # errors then follow from that)?
        ok = first is not None and first.status != "failed"
        end = time.monotonic() + (10 if ok else 2)
        for process in processes:
            process.join(timeout=max(0.0, end - time.monotonic()))
        if not ok:
            self.check(processes)

    def check(self, processes: list[Any]) -> None:
        """Ranks that exited without sending a result: died."""
        for rank, process in enumerate(processes):
            if process.exitcode is None or rank in self.outcome.results or rank in self.outcome.died:
                continue
            self.drain(block=False)  # a result sent just before it exited
            if rank not in self.outcome.results:
                self.outcome.died[rank] = exit_reason(process.exitcode)

    def drain(self, block: bool) -> None:
        try:
            message = self.events.get(timeout=POLL_S) if block else self.events.get_nowait()
        except queue.Empty:
            return
        self.handle(message)
        while True:
            try:
                self.handle(self.events.get_nowait())
            except queue.Empty:
                return

    def handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "report":
            _, step, metrics = message
            self.step = step
            self.history.append((step, metrics))
            stop = bool(self.options.report and self.options.report(step, metrics))
            self.replies.put(stop)
        elif kind == "progress":
            _, step, total, loss = message
            self.step = step
            if self.options.progress:
                self.options.progress(step, total, loss)
        elif kind == "result":
            _, rank, result = message
            self.outcome.add(rank, result)


def _context() -> Any:
    """Forkserver: a server process, spawned once per supervisor, imports torch and the VLM code
    once; each rank is a fork of it (a fresh interpreter's safety for CUDA, without every rank
    of every trial paying those imports)."""
    context = tmp.get_context("forkserver")
    context.set_forkserver_preload(["trials.train", "trials.distributed"])
    return context


def _stop(processes: list[Any]) -> None:
    """Ranks still running are ended (terminate, then kill)."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


def _die_with_parent() -> None:
    """A rank whose supervisor is gone (killed, interrupted) exits at once: never an orphan."""
    parent = tmp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _answer(replies: Any, timeout_s: float) -> bool:
    """The supervisor's stop/continue answer to rank 0's report (continue if none comes)."""
    try:
        return bool(replies.get(timeout=timeout_s))
    except queue.Empty:
        return False


def _rank_main(rank: int, job: RankJob, events: Any, replies: Any, train: Train | None) -> None:
    """One rank: join the group, train, send the result (whatever happens)."""
    _die_with_parent()
    torch.set_num_threads(job.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch.distributed as dist

    from trials.train import train_vlm

    device = rank_device(job.device, rank)
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                init_method=f"tcp://127.0.0.1:{job.port}", rank=rank,
                                world_size=job.world,
                                timeout=datetime.timedelta(seconds=job.timeout_s))
        options = rank_options(job, device, rank, events.put, lambda: _answer(replies, job.timeout_s))
        result = (train or train_vlm)(job.point, options, Distributed(device))
    except Exception as exc:  # outside train_vlm's own rules: the group could not form
        result = TrialResult(job.point, "failed", 0, failure=Failure("error", f"{type(exc).__name__}: {exc}"))
    events.put(("result", rank, result))
    if dist.is_initialized():
        dist.destroy_process_group()  # peers blocked on this rank see it gone at once (gloo)


def rank_options(job: RankJob, device: torch.device, rank: int, send: Callable[[tuple[Any, ...]], None],
                 answer: Callable[[], bool] | None) -> TrialOptions:
    """The trial's options in one rank. Rank 0's report and progress go out through `send`; a
    report then waits for `answer()` (stop?), or continues when there is none to wait for."""
    def report(step: int, metrics: dict[str, float]) -> bool:
        send(("report", step, metrics))
        return answer() if answer is not None else False

    def progress(step: int, total: int, loss: float) -> None:
        send(("progress", step, total, loss))

    cache = TakingTurns(Path(job.cache_root)) if job.cache_root else FeatureCache(None)
    return replace(job.options, device=str(device), cache=cache,
                   report=report if rank == 0 else None,
                   progress=progress if rank == 0 and job.progress else None)

