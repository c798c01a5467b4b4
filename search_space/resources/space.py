"""The resource model over a whole space: each analytic metric's range, and the designs that
cannot train on the device (named with why), for `vlmsearch check`."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from search_space.cost import UnknownGeometry
from search_space.errors import InvalidDesign
from search_space.point import TrialConfig
from search_space.resources.analytic import ANALYTIC_METRICS, assess
from search_space.sampling import CompiledSpace
from search_space.space import Resources

MAX_DESIGNS = 5000  # designs evaluated for the ranges; beyond, the summary says it sampled
MAX_SUBSETS = 200  # a pool with more subsets than this is sampled over them ...
BIG_POOL_DESIGNS = 2000  # ... with fewer designs (`check` on 12 experts stays under 2 s)


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
    shrinks with each number), up to a budget of designs taken from the expert subsets in turn
    (so a big pool's largest subsets are among them, not only its first)."""
    out = SpaceEstimate()
    if not compiled.space.trains_vlm:
        return out
    budget = MAX_DESIGNS if len(compiled.subsets) <= MAX_SUBSETS else BIG_POOL_DESIGNS
    for point in _spread(compiled):
        if out.designs >= budget:
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



def _spread(compiled: CompiledSpace) -> Iterator[TrialConfig]:
    """The extreme points of every subset of the smallest and of the largest size and of up to
    MAX_SUBSETS more evenly spaced between, one subset after another in turn."""
    subsets = compiled.subsets
    sizes = (min(map(len, subsets)), max(map(len, subsets)))
    step = max(1, -(-len(subsets) // MAX_SUBSETS))
    chosen = list(dict.fromkeys([*(s for s in subsets if len(s) in sizes), *subsets[::step]]))
    streams = [compiled.extreme_points(subset) for subset in chosen]
    for round_ in itertools.zip_longest(*streams):
        yield from (point for point in round_ if point is not None)
