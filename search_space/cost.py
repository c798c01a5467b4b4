"""Analytic cost model: visual tokens and LM positions of a point, without building a model."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from search_space.components import POSITIONS
from search_space.errors import InvalidDesign
from search_space.fusions import FUSIONS, INSIDE_FAMILIES, Grid
from search_space.point import ExpertConfig, TrialConfig
from search_space.presets import expert_info
from search_space.sampling import CompiledSpace, FusionOption, values


class UnknownGeometry(ValueError):
    """An expert whose grid cannot be known without loading it (and no `tokens` is set)."""


@dataclass(frozen=True)
class Cost:
    visual_tokens: int
    positions_used: int
    groups: tuple[Grid, ...]  # the visual groups the LM receives, in order


def _area(grid: Grid) -> int:
    return grid[0] * grid[1]


# where an expert's merged layers meet without `tokens` (ExpertConfig.merge_grid); the first of
# equal grids wins. trials.vlm.reduce.target_grid reads this table, so module and model agree.
MERGE_GRIDS: dict[str, Callable[[Sequence[Grid]], Grid]] = {
    "smallest": lambda grids: min(grids, key=_area),  # larger layers pooled (adaptive average)
    "largest": lambda grids: max(grids, key=_area),   # smaller layers resized up (bilinear, MGM)
}


def expert_grid(cfg: ExpertConfig) -> Grid:
    """The expert's grid after layer merge and reduction (REFERENCE.md: token reduction)."""
    if cfg.tokens is not None:
        side = math.isqrt(cfg.tokens)
        return side, side
    info = expert_info(cfg.source)
    if info is None:
        raise UnknownGeometry(f"the grid of '{cfg.source}' is unknown until it is loaded; "
                              "set `tokens` to fix it")
    grids = [info.grid(layer, cfg.image_size) for layer in cfg.layer_list]
    return MERGE_GRIDS[cfg.merge_grid](grids)  # merged layers meet at the smallest / largest grid


def groups_cost(groups: Sequence[Grid], positions: str) -> Cost:
    scheme = POSITIONS.get(positions)
    return Cost(sum(h * w for h, w in groups), sum(scheme.used(h, w) for h, w in groups),
                tuple(groups))


def point_cost(point: TrialConfig) -> Cost:
    """visual_tokens and positions_used of `point` (raises InvalidDesign / UnknownGeometry).
    A design of a non-VLM evaluator gives no LM any visual token."""
    if not point.trains_vlm:
        return Cost(0, 0, ())
    point.fusion_projector()  # a per-expert projector mapping only where the operator has one per expert
    grids = [expert_grid(cfg) for _, cfg in point.ordered_experts()]
    if FUSIONS.get(point.fusion.kind).live_primary:
        _check_inside(point)
    groups = FUSIONS.get(point.fusion.kind).groups(point.fusion, grids)
    return groups_cost(groups, point.positions)


def _check_inside(point: TrialConfig) -> None:
    """An operator inside the primary (mr_adapter) needs a ViT with blocks, read at its width."""
    name, cfg = point.ordered_experts()[0]
    info = expert_info(cfg.source)
    kind = point.fusion.kind
    if info is not None and info.family not in INSIDE_FAMILIES:
        raise InvalidDesign(f"{kind} runs inside the primary expert, but {name} is a {info.family}; "
                            f"make a {' / '.join(sorted(INSIDE_FAMILIES))} expert the primary "
                            "(primary: true)")
    if cfg.merge == "concat" and len(cfg.layer_list) > 1:
        raise InvalidDesign(f"{kind}'s adapters run at {name}'s width, which a concat of "
                            f"{len(cfg.layer_list)} layers widens; read one layer or merge with mean "
                            "/ layerscale")
    if info is None:
        return
    point.fusion.positions(info.num_layers)  # `at` within the primary's blocks
    inner = info.grid(-1, cfg.image_size)
    for other, scfg in point.ordered_experts()[1:]:
        for target in {inner, expert_grid(cfg)}:  # the adapters inside, the final align after
            _check_pooling(kind, other, expert_grid(scfg), target)


def _check_pooling(kind: str, name: str, grid: Grid, target: Grid) -> None:
    """LLaVA-HR avg-pools a larger secondary by an integer ratio (it interpolates a smaller one)."""
    if grid[0] * grid[1] > target[0] * target[1] and (grid[0] % target[0] or grid[1] % target[1]):
        raise InvalidDesign(f"{kind} pools {name}'s {grid[0]}x{grid[1]} grid to the primary's "
                            f"{target[0]}x{target[1]} by an integer ratio; give {name} a multiple of "
                            "it (its `tokens` or `image_size`) or the primary a larger `image_size`")


def position_ids(groups: Sequence[Grid], positions: str, p0: int) -> tuple[list[list[list[int]]], int]:
    """Position ids of each group (rows of ids) starting at p0, and where the text resumes."""
    scheme, out = POSITIONS.get(positions), []
    for h, w in groups:
        out.append(scheme.ids(h, w, p0))
        p0 += scheme.used(h, w)
    return out, p0


@dataclass(frozen=True)
class CostRange:
    tokens: tuple[int, int] | None     # None: no point's geometry is known
    positions: tuple[int, int] | None
    complete: bool = True              # False: some experts' grids are unknown (no `tokens`)

    def reference_bounds(self) -> dict[str, float]:
        """Just past the worst analytic cost: the hypervolume's reference for these objectives."""
        bounds = {}
        if self.tokens:
            bounds["visual_tokens"] = self.tokens[1] + 1.0
        if self.positions:
            bounds["positions_used"] = self.positions[1] + 1.0
        return bounds


def space_cost_range(compiled: CompiledSpace) -> CostRange:
    """Smallest and largest visual_tokens / positions_used over every point of the space.

    A fusion's cost depends on its first (primary) expert's grid and on the *multiset* of the
    others' grids, not on their order (tests/search_space/test_cost.py checks this against every
    ordering), so the grids are enumerated as multisets: a 12-expert pool costs milliseconds."""
    if not compiled.space.trains_vlm:
        return CostRange(None, None)
    seen: set[tuple[int, int]] = set()
    unknown = False
    positions = tuple(values(dict(compiled.rest.fields)["positions"]))
    grid_sets: dict[str, tuple[Grid, ...]] = {}
    for name, node in compiled.experts.items():
        try:
            grid_sets[name] = tuple(sorted({expert_grid(ExpertConfig(**v)) for v in values(node, "low")}))
        except UnknownGeometry:
            unknown = True
    for subset in compiled.subsets:
        if any(n not in grid_sets for n in subset):
            continue
        ordered = sorted(subset, key=lambda n: not compiled.space.pool[n].primary)
        first, rest = grid_sets[ordered[0]], tuple(sorted(grid_sets[n] for n in ordered[1:]))
        for option in compiled.admissible(len(subset)):
            seen |= _option_costs(option, first, rest, positions)
    if not seen:
        return CostRange(None, None, complete=False)
    tokens = [t for t, _ in seen]
    used = [u for _, u in seen]
    return CostRange((min(tokens), max(tokens)), (min(used), max(used)), complete=not unknown)


@functools.lru_cache(maxsize=4096)
def _option_costs(option: FusionOption, first: tuple[Grid, ...], rest: tuple[tuple[Grid, ...], ...],
                  positions: tuple[str, ...]) -> frozenset[tuple[int, int]]:
    """(tokens, positions) of one fusion option over every grid multiset."""
    kind = FUSIONS.get(option.kind)
    params = {kind.params.model_validate(v) for v in values(option.node, "low")}
    out: set[tuple[int, int]] = set()
    for p, grids in itertools.product(params, _multisets(first, rest)):
        try:
            groups = kind.groups(p, grids)
        except InvalidDesign:
            continue
        out |= {(c.visual_tokens, c.positions_used) for c in (groups_cost(groups, s) for s in positions)}
    return frozenset(out)


def _multisets(first: tuple[Grid, ...], rest: tuple[tuple[Grid, ...], ...]) -> set[tuple[Grid, ...]]:
    """Each choice of the first grid, then the others' grids as a sorted multiset."""
    tails: set[tuple[Grid, ...]] = {()}
    for options in rest:
        tails = {tuple(sorted((*tail, g))) for tail in tails for g in options}
    return {(g, *tail) for g in first for tail in tails}
