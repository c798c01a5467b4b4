"""The resource model over a whole space: each analytic metric's range, and the designs that
cannot train on the device (named with why), for `vlmsearch check`."""

from __future__ import annotations

from dataclasses import dataclass, field

from search_space.cost import UnknownGeometry
from search_space.errors import InvalidDesign
from search_space.point import TrialConfig
from search_space.resources.analytic import ANALYTIC_METRICS, assess
from search_space.sampling import CompiledSpace
from search_space.space import Resources

MAX_DESIGNS = 5000  # designs evaluated for the ranges; beyond, the summary says it sampled


@dataclass
class SpaceEstimate:
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    designs: int = 0                 # designs evaluated (numeric ranges at their ends)
    unknown: int = 0                 # of which some model's config is unknown
    impossible: list[tuple[TrialConfig, str]] = field(default_factory=list)  # cannot train: why
    truncated: bool = False

    def add(self, metrics: dict[str, float]) -> None:
        for name in ANALYTIC_METRICS:
            if name in metrics:
                low, high = self.ranges.get(name, (metrics[name], metrics[name]))
                self.ranges[name] = (min(low, metrics[name]), max(high, metrics[name]))


def space_estimate(compiled: CompiledSpace, resources: Resources) -> SpaceEstimate:
    """Every design with each numeric range at one of its ends (the resource model grows or
    shrinks with each number), up to MAX_DESIGNS."""
    out = SpaceEstimate()
    if not compiled.space.trains_vlm:
        return out
    for point in compiled.extreme_points():
        if out.designs >= MAX_DESIGNS:
            out.truncated = True
            break
        try:
            metrics, problems = assess(point, resources)
        except (InvalidDesign, UnknownGeometry):
            continue
        out.designs += 1
        out.unknown += "est_mem_gb" not in metrics
        out.add(metrics)
        out.impossible += [(point, why) for _, why in problems]
    return out
