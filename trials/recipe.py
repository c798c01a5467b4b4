"""How a trial trains on the device it got: precision, micro-batch and gradient checkpointing,
chosen with the resource model (`search_space.resources`) against the device's free memory,
and the `est_*` metrics on the space's device profile."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psutil
import torch

from search_space import (
    GB,
    CannotEstimate,
    Estimate,
    InvalidDesign,
    Resources,
    TrialConfig,
    UnknownGeometry,
    estimate,
)

log = logging.getLogger(__name__)


@dataclass
class Recipe:
    """What the training loop runs with; `micro_batch` halves on a real out-of-memory."""

    precision: str          # fp32 | bf16
    micro_batch: int        # samples per forward, on this process
    checkpointing: bool
    planned: Estimate | None = None       # on this device's free memory
    metrics: dict[str, float] = field(default_factory=dict)  # est_* on the device profile
    halvings: int = 0

    def memory_note(self) -> str:
        """The estimate at micro-batch 1, for an out-of-memory message."""
        if self.planned is None:
            return "no estimate (a model's config is unknown)"
        one = self.planned.memory_at(1)
        return (f"the resource model estimated {one / GB:.1f} GB at micro-batch 1 "
                f"(checkpointing {'on' if self.checkpointing else 'off'}, {self.precision})")


def free_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    return float(psutil.virtual_memory().available)


def _estimate(point: TrialConfig, resources: Resources, **kwargs: object) -> Estimate | None:
    try:
        return estimate(point, resources.profile, resources.mfu, resources.text_tokens,
                        resources.world_size, **kwargs)  # type: ignore[arg-type]
    except (CannotEstimate, UnknownGeometry, InvalidDesign, KeyError) as exc:
        log.info("no resource estimate for this design: %s", exc)
        return None


def plan_recipe(point: TrialConfig, device: torch.device, resources: Resources) -> Recipe:
    """Precision (auto: bf16 on CUDA), micro-batch and checkpointing for `device`."""
    train = point.train
    precision = train.precision if train.precision != "auto" else (
        "bf16" if device.type == "cuda" else "fp32")
    local = point.model_copy(update={"train": train.model_copy(update={"precision": precision})})
    planned = _estimate(local, resources, memory_bytes=free_memory(device))
    profiled = _estimate(point, resources)
    per_rank = max(1, -(-train.batch_size // resources.world_size))
    if planned is not None:
        micro, checkpointing = planned.micro_batch, planned.checkpointing
    else:  # unknown configs: the whole batch at once, halved on a real out-of-memory
        micro = per_rank if train.micro_batch == "auto" else min(per_rank, train.micro_batch)
        checkpointing = train.gradient_checkpointing is True
    metrics = {k: v for k, v in profiled.metrics().items() if k != "micro_batch"} if profiled else {}
    return Recipe(precision, micro, checkpointing, planned, metrics)
