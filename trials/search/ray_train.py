"""A data-parallel trial on the Ray backend: the Tune trial runs a Ray Train `TorchTrainer`
whose `world` workers each call `train_vlm` with `Distributed` ranks, in the process group Ray
Train sets up (gloo on CPU, nccl on GPUs; each worker on `ray.train.torch.get_device()`).

Ray 2.60 runs Ray Train V2 (`RAY_TRAIN_V2_ENABLED`, on by default), where `fit()` inside a Tune
trial is the supported nesting and `ray.train.report` is collective: every worker must call it
at the same points. Only rank 0 evaluates, so rank 0 instead sends its reports, and every rank
its result, over a Ray queue to the Tune trial, which calls `tune.report` for each report while
the trainer runs in a thread beside it; the trial returns once the trainer has shut down, and
removes the workers' placement group if that did not (a worker died). Early stopping: the
scheduler stops the Tune trial; its actor ends, and with it the Train controller and workers it
owns (Ray's owner fate-sharing). Their placement group outlives them (Ray Train's own cleaner
needs the dashboard's state API), so the driver removes it when the trial completes
(`release_group`; every report to Tune names it).
The Tune trial itself reserves nothing; the trainer's workers take `search.resources` between them.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from search_space import Failure, TrialConfig, TrialResult
from trials.distributed import (
    GRACE_S,
    TIMEOUT_S,
    Outcome,
    RankJob,
    Train,
    combine,
    rank_job,
    rank_options,
)
from trials.outcome import TrialOptions

log = logging.getLogger(__name__)
POLL_S = 0.2
SHUTDOWN_S = 120.0  # how long a finished trial waits for its trainer to shut down
GROUP = "vlm_train_group"  # report key: the hex id of the trial's Train placement group


def worker_resources(options: TrialOptions) -> dict[str, float]:
    """One Train worker's share of the trial's resources."""
    resources, world = options.resources, options.resources.world_size
    share = {"CPU": resources.cpu / world}
    if resources.gpu:
        share["GPU"] = resources.gpu / world
    return share


def train_on_ray(point: TrialConfig, options: TrialOptions, storage: Path,
                 extra: dict[str, str], train: Train | None = None) -> TrialResult:
    """`point` trained by a `TorchTrainer` of `world_size` workers; rank 0's reports go to
    `options.report`, `extra[GROUP]` names the workers' placement group (for every report to
    Tune). `train` replaces `train_vlm` in each worker. Always a result."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue

    from trials.train import with_steps

    resources = options.resources
    queue = Queue(actor_options={"num_cpus": 0})
    job = rank_job(point, options, "auto", 0, TIMEOUT_S)  # device: Ray Train's
    trainer = TorchTrainer(
        _worker, train_loop_config={"job": job, "queue": queue, "train": train},
        scaling_config=ScalingConfig(num_workers=job.world, use_gpu=resources.gpu > 0,
                                     resources_per_worker=worker_resources(options)),
        torch_config=TorchConfig(backend="nccl" if resources.gpu > 0 else "gloo",
                                 timeout_s=int(TIMEOUT_S)),
        run_config=RunConfig(name=f"train-{tune.get_context().get_trial_id()}",
                             storage_path=str(storage), failure_config=FailureConfig(max_failures=0)))
    fit = _Fit(trainer)
    fit.start()
    relay = _Relay(options, Outcome(job.world), extra)
    relay.follow(queue, fit)
    fit.join(timeout=SHUTDOWN_S)  # done or failed: the trainer removes its placement group,
    release_group(extra)          # except where a worker died under it
    trained = with_steps(point, options.steps)
    if fit.error is not None and not relay.add_failures(fit.error) and not relay.outcome.settled:
        return TrialResult(trained, "failed", relay.step, history=relay.history,
                           failure=Failure("error", f"Ray Train: {_first_line(fit.error)}"))
    return combine(relay.outcome, trained, relay.step, relay.history)


class _Fit(threading.Thread):
    """`trainer.fit()` beside the Tune trial's thread (which relays reports meanwhile)."""

    def __init__(self, trainer: Any) -> None:
        super().__init__(daemon=True, name="ray-train-fit")
        self.trainer = trainer
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.trainer.fit()
        except BaseException as exc:  # WorkerGroupError, ControllerError: read by the relay
            self.error = exc


class _Relay:
    """The Tune trial's side of the queue: reports to Tune, results into the outcome."""

    def __init__(self, options: TrialOptions, outcome: Outcome, extra: dict[str, str]) -> None:
        self.options, self.outcome, self.extra = options, outcome, extra
        self.actors: dict[str, int] = {}  # Ray actor id -> rank
        self.history: list[tuple[int, dict[str, float]]] = []
        self.step = 0

    def follow(self, queue: Any, fit: _Fit) -> None:
        """Until rank 0 is done (or every rank is), the trainer ends, or a failure has had its
        grace (a rank blocked in a collective a failed peer left)."""
        from ray.util.queue import Empty

        deadline: float | None = None
        while not self.outcome.settled:
            done = not fit.is_alive()
            try:
                self.handle(queue.get(timeout=POLL_S))
                continue
            except Empty:
                if done:
                    return
            if self.outcome.failing and deadline is None:
                deadline = time.monotonic() + GRACE_S
            if deadline is not None and time.monotonic() > deadline:
                return

    def handle(self, message: tuple[Any, ...]) -> None:
        if message[0] == "report":
            _, step, metrics = message
            self.step = step
            self.history.append((step, metrics))
            if self.options.report:
                self.options.report(step, metrics)
        elif message[0] == "result":
            _, rank, result = message
            self.outcome.add(rank, result)
        elif message[0] == "group":
            self.extra[GROUP] = message[1]
        elif message[0] == "rank":
            _, rank, actor = message
            self.actors[actor] = rank

    def add_failures(self, error: BaseException) -> bool:
        """Ranks the trainer lost without a result (a worker that raised or died); False when no
        rank can be named (the trainer's own error)."""
        failures = dict(getattr(error, "worker_failures", None) or {})
        cause = getattr(error, "controller_failure", None)  # a worker's actor died under a call
        text = str(error)
        for actor, rank in self.actors.items():
            if cause is not None and actor in text:
                failures.setdefault(rank, cause)
        for rank, exc in sorted(failures.items()):
            if rank not in self.outcome.results:
                self.outcome.died[rank] = _first_line(exc)[:300]
        return bool(self.outcome.died)


def release_group(result: dict[str, Any]) -> None:
    """In the driver, for a finished trial: remove its Train workers' placement group if it is
    still there (a trial the scheduler stopped); removing it also ends any worker left."""
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    hex_id = result.get(GROUP)
    if not isinstance(hex_id, str):
        return
    group = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(hex_id)))
    try:
        if placement_group_table(group).get("state", "REMOVED") != "REMOVED":
            remove_placement_group(group)
    except Exception as exc:  # already gone, or the cluster is: nothing to hold resources
        log.debug("placement group %s: %s", hex_id, exc)


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1].strip() if lines else ''}"[:500]


class RankFailed(RuntimeError):
    """A rank's trial failed: raised after its result is sent, so Ray Train ends the group
    (peers blocked in a collective are stopped rather than waiting for its timeout)."""


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: its rank of the trial, its result onto the queue."""
    import torch
    from ray.train.torch import get_device

    from trials.parallel import Distributed
    from trials.train import train_vlm

    job: RankJob = config["job"]
    queue = config["queue"]
    torch.set_num_threads(job.threads)
    device = get_device()
    ranks = Distributed(device)
    queue.put(("rank", ranks.rank, ray.get_runtime_context().get_actor_id()))
    group = ray.util.get_current_placement_group()
    if ranks.rank == 0 and group is not None:
        queue.put(("group", group.id.hex()))
    options = rank_options(job, device, ranks.rank, queue.put, None)
    result = (config["train"] or train_vlm)(job.point, options, ranks)
    result.host = ray.get_runtime_context().get_node_id()
    queue.put(("result", ranks.rank, result))
    if result.status == "failed":
        raise RankFailed(result.failure.message if result.failure else "failed")
