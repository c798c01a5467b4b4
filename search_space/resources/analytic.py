"""Every metric known before training, and the problems that make a design impossible on its
device: what `vlmsearch check` prints and what a search rejects without training."""

from __future__ import annotations

from search_space.cost import point_cost
from search_space.point import TrialConfig
from search_space.resources.devices import DEVICE_PROFILES, GB
from search_space.resources.estimate import CannotEstimate, Estimate, Part, estimate
from search_space.space import Resources

# The analytic metrics, in the order `check --json` prints them.
ANALYTIC_METRICS = ("visual_tokens", "positions_used", "trainable_params", "total_params",
                    "est_mem_gb", "est_train_tflop", "est_gpu_hours", "micro_batch")


def point_estimate(point: TrialConfig, resources: Resources) -> Estimate | None:
    """The resource model on the resources' device profile; None when a config is unknown."""
    try:
        return estimate(point, resources.profile, resources.mfu, resources.text_tokens,
                        resources.world_size)
    except CannotEstimate:
        return None


def trained_params(e: Estimate) -> int:
    """Parameters that train in some stage (each counted once)."""
    return sum(max(plan_part.trainable for plan in e.stages for plan_part in plan.parts
                   if plan_part.name == part.name) for part in e.parts)


Problem = tuple[str, str]  # (the YAML section to change, what is wrong and the fix)


def assess(point: TrialConfig, resources: Resources) -> tuple[dict[str, float], list[Problem]]:
    """(the analytic metrics, why the design cannot train on its device). The metrics are
    visual_tokens and positions_used, and, when the models' configs are known, parameters and
    the resource model's estimates. Raises InvalidDesign / UnknownGeometry as point_cost."""
    cost = point_cost(point)
    metrics: dict[str, float] = {"visual_tokens": cost.visual_tokens,
                                 "positions_used": cost.positions_used}
    e = point_estimate(point, resources) if point.trains_vlm else None
    if e is None:
        return metrics, []
    metrics.update(trainable_params=trained_params(e), total_params=sum(p.params for p in e.parts),
                   **e.metrics())
    problems: list[Problem] = []
    if e.max_positions is not None and e.positions_needed > e.max_positions:
        visual = cost.positions_used
        problems.append(("positions", f"the LM sees up to {e.positions_needed} positions ({visual} "
                         f"visual + {e.positions_needed - visual} text), beyond its "
                         f"max_position_embeddings ({e.max_positions}); share positions (positions: "
                         "share_by_row or share_all), use fewer visual tokens, or an LM with a "
                         "longer context"))
    if not e.fits:
        problems.append(("train", _too_big(e, _at_smallest(point, resources) or e)))
    return metrics, problems


def analytic_metrics(point: TrialConfig, resources: Resources) -> dict[str, float]:
    return assess(point, resources)[0]


def design_problems(point: TrialConfig, resources: Resources) -> list[Problem]:
    """Why `point` cannot train on its device: LM positions beyond the LM's maximum, or memory
    beyond the device even at micro-batch 1 with gradient checkpointing."""
    return assess(point, resources)[1]


def _at_smallest(point: TrialConfig, resources: Resources) -> Estimate | None:
    """The design at micro-batch 1 with gradient checkpointing: the least memory it can take."""
    train = point.train.model_copy(update={"micro_batch": 1, "gradient_checkpointing": True})
    return point_estimate(point.model_copy(update={"train": train}), resources)


def _held(part: Part) -> float:
    return (part.weight_bytes + part.state_bytes) / GB


def _too_big(e: Estimate, smallest: Estimate) -> str:
    profile = DEVICE_PROFILES.get(e.profile)
    device = f"one {e.profile} ({profile.memory_gb:g} GB)"
    if smallest.fits:
        return (f"at micro_batch {e.micro_batch} it needs {e.mem_bytes / GB:.1f} GB, beyond {device}; "
                "use micro_batch: auto (or a smaller one)")
    parts = sorted(smallest.parts, key=_held, reverse=True)
    shown = ", ".join(f"{p.name} {_held(p):.1f} GB" for p in parts[:3])
    per_sample = max(plan.per_sample_bytes() for plan in smallest.stages) / GB
    return (f"does not fit {device} even at micro-batch 1 with gradient checkpointing: "
            f"{smallest.mem_bytes / GB:.1f} GB ({shown}; activations {per_sample:.1f} GB per sample "
            f"at {smallest.seq_len} tokens); train the LM with lora instead of full, use "
            "precision: bf16, fewer visual tokens, or a larger device_profile")
