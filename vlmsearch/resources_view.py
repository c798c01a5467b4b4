"""What `vlmsearch check` says about resources: a point's estimates, a space's ranges, and the
one JSON object of `check --json`."""

from __future__ import annotations

from typing import Any

from search_space import (
    ANALYTIC_METRICS,
    DEVICE_PROFILES,
    GB,
    CompiledSpace,
    InvalidDesign,
    Loaded,
    Resources,
    TrialConfig,
    UnknownGeometry,
    assess,
    compile_space,
    point_estimate,
    space_estimate,
)

SHOWN_IMPOSSIBLE = 3


def count(n: float) -> str:
    """1234567 -> '1.23 M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f}"


def size(gb: float) -> str:
    """Decimal gigabytes, or megabytes below one."""
    return f"{gb:.1f} GB" if gb >= 1 else f"{gb * 1000:.0f} MB"


def _device(resources: Resources) -> str:
    return f"{resources.profile} ({DEVICE_PROFILES.get(resources.profile).memory_gb:g} GB)"


def point_lines(point: TrialConfig, resources: Resources) -> list[str]:
    """Parameters by part, memory at the chosen micro-batch, FLOPs and GPU-hours."""
    e = point_estimate(point, resources)
    if e is None:
        return ["  resources: unknown (a model's config is not known without downloading it)"]
    parts = ", ".join(f"{p.name} {count(p.params)}" for p in e.parts)
    metrics = assess(point, resources)[0]
    steps = sum(plan.step_flops(point.train.batch_size) for plan in e.stages) / len(e.stages)
    return [
        f"  parameters: {count(metrics['total_params'])} ({parts}); trainable "
        f"{count(metrics['trainable_params'])}",
        f"  est. memory: {size(e.mem_bytes / GB)} at micro-batch {e.micro_batch} of "
        f"{point.train.batch_size} ({e.precision}, gradient checkpointing "
        f"{'on' if e.checkpointing else 'off'}, {e.seq_len} tokens a sample) on {_device(resources)}",
        f"  est. compute: {e.train_flops / 1e12:.4g} TFLOP for the trial ({steps / 1e12:.3g} TFLOP "
        f"a step); {e.gpu_hours:.3g} GPU-hours on {resources.profile} at MFU {resources.mfu:g}",
    ]


def _span(pair: tuple[float, float], fmt: str) -> str:
    low, high = pair
    return format(low, fmt) if low == high else f"{format(low, fmt)} .. {format(high, fmt)}"


def _design(point: TrialConfig) -> str:
    return f"{'+'.join(point.experts)}, {point.fusion.kind}, {point.positions}"


def space_lines(compiled: CompiledSpace, resources: Resources) -> list[str]:
    """Each estimate's range over the space, and the designs that cannot train (why)."""
    est = space_estimate(compiled, resources)
    r = est.ranges
    if "est_mem_gb" not in r:
        return ["  resources: unknown (a model's config is not known without downloading it)"]
    sampled = f", {est.designs} designs sampled over the subsets" if est.truncated else ""
    lines = [
        f"  est. memory: {size(r['est_mem_gb'][0])} .. {size(r['est_mem_gb'][1])} on "
        f"{_device(resources)}{sampled}",
        f"  est. compute: {_span(r['est_train_tflop'], '.4g')} TFLOP a trial; "
        f"{_span(r['est_gpu_hours'], '.3g')} GPU-hours at MFU {resources.mfu:g}",
        f"  parameters: {count(r['total_params'][0])} .. {count(r['total_params'][1])}; trainable "
        f"{count(r['trainable_params'][0])} .. {count(r['trainable_params'][1])}"]
    if est.unknown:
        lines.append(f"  ({est.unknown} designs have a model whose config is unknown: not estimated)")
    designs = {p.config_hash for p, _ in est.impossible}
    if not designs:
        lines.append(f"  every design fits one {resources.profile}")
        return lines
    lines.append(f"  cannot train: {len(designs)} of {est.designs} designs (rejected before "
                 "training), e.g.:")
    shown = list(dict.fromkeys(f"    {_design(p)}: {why}" for p, why in est.impossible))
    lines += shown[:SHOWN_IMPOSSIBLE]
    return lines


COUNTS = {"visual_tokens", "positions_used", "trainable_params", "total_params", "micro_batch"}


def _number(name: str, value: float) -> float | int:
    return int(value) if name in COUNTS else value


def check_json(loaded: Loaded) -> dict[str, Any]:
    """Every analytic metric of a point, or its {"min", "max"} over a space."""
    space = loaded.space
    compiled = compile_space(space)
    resources = space.search.resources
    out: dict[str, Any] = {"name": space.name, "device_profile": resources.profile}
    if not compiled.free_parameters():
        point = compiled.only_point()
        out["config_hash"] = point.config_hash
        try:
            metrics, problems = assess(point, resources)
        except (InvalidDesign, UnknownGeometry) as exc:
            return {**out, "problems": [str(exc)]}
        return {**out, **{m: _number(m, metrics[m]) for m in ANALYTIC_METRICS if m in metrics},
                "problems": [why for _, why in problems]}
    est = space_estimate(compiled, resources)
    out.update({m: {"min": _number(m, est.ranges[m][0]), "max": _number(m, est.ranges[m][1])}
                for m in ANALYTIC_METRICS if m in est.ranges})
    out["designs"] = est.designs
    out["cannot_train"] = len({p.config_hash for p, _ in est.impossible})
    return out
