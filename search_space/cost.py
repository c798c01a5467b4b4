"""Analytic cost model: visual tokens and LM positions of a point, without building a model."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from search_space.components import POSITIONS
from search_space.errors import InvalidDesign, UnknownGeometry
from search_space.fusions import FUSIONS, INSIDE_FAMILIES, FusionKind, Grid
from search_space.point import ExpertConfig, TrialConfig
from search_space.presets import ExpertInfo, expert_info
from search_space.reductions import REDUCTIONS, ReduceSpec, reduced
from search_space.sampling import CompiledSpace, FusionOption, values
from search_space.tiling import TileLayout, tile_layout


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


def resolved_reduction(cfg: ExpertConfig, info: ExpertInfo) -> ExpertConfig:
    """`cfg` with a `reduce` mapping in its name form (`tokens`, name) on its selected layers'
    grids: what every reader of the reduction sees (a name form is `cfg` itself)."""
    return cfg.resolved([info.grid(layer, cfg.image_size) for layer in cfg.layer_list])


def layer_shapes(cfg: ExpertConfig, info: ExpertInfo) -> list[tuple[Grid, int]]:
    """Each selected layer's (grid, width) after the expert's reduction to `tokens` (each layer
    is reduced before the merge: REFERENCE.md, "Token reduction"; `search_space.reductions`)."""
    cfg = resolved_reduction(cfg, info)
    return [reduced(info.grid(layer, cfg.image_size), info.layer_width(layer), cfg.tokens, cfg.reduce)
            for layer in cfg.layer_list]


def expert_grid(cfg: ExpertConfig) -> Grid:
    """The expert's grid after layer merge and reduction (REFERENCE.md: token reduction)."""
    info = expert_info(cfg.source)
    if info is None:
        cfg = cfg.resolved(None)  # a mapping with its own grid is known (UnknownGeometry else)
        if cfg.tokens is not None and REDUCTIONS.get(cfg.reduce).width_preserving:
            side = math.isqrt(cfg.tokens)
            return side, side
        raise UnknownGeometry(f"the grid of '{cfg.source}' is unknown until it is loaded; "
                              "set `tokens` (with reduce: pool or resize) to fix it")
    grids = [grid for grid, _ in layer_shapes(cfg, info)]
    return MERGE_GRIDS[cfg.merge_grid](grids)  # merged layers meet at the smallest / largest grid


@dataclass(frozen=True)
class FusionPlan:
    """The experts as the fusion reads them (primary first) and the reduction of its groups.

    vlmsearch rule (REFERENCE.md, "Token reduction"): a fusion that reads windows of its experts'
    maps (`FusionKind.injects`: mr_adapter, cross_attention, sva) gets every expert at its full
    resolution, since an M x M window per primary token (or query) is its point; a secondary's
    `tokens`/`reduce` are not read there (`unread`; a point that sets them is refused by
    `vlmsearch check`, while a space's pool keeps them for its other fusion kinds). Where the
    group lies on the primary's grid (mr_adapter, cross_attention) the primary's reduction is
    applied to the fused group instead (`after`); sva's group is its query grid.
    """

    experts: tuple[tuple[str, ExpertConfig], ...]
    after: ExpertConfig | None = None  # whose tokens/reduce reduce the fused group(s)
    unread: tuple[str, ...] = ()       # experts whose tokens/reduce this fusion does not read
    tiling: TileLayout | None = None   # the experts run, and the fusion fuses, on each tile

    def output(self, groups: Sequence[Grid]) -> list[Grid]:
        """The fused groups after `after`'s reduction (a width-preserving one: they are at the
        LM width already)."""
        if self.after is None:
            return list(groups)
        return [reduced(g, 1, self.after.tokens, self.after.reduce)[0] for g in groups]

    def lm_groups(self, groups: Sequence[Grid]) -> list[Grid]:
        """The groups the LM receives from one image's (one tile's) fused groups."""
        out = self.output(groups)
        return out if self.tiling is None else self.tiling.groups(out)

    @property
    def images(self) -> int:
        """Images each expert runs on per sample (tiles and thumbnail; 1 untiled)."""
        return 1 if self.tiling is None else self.tiling.images


def expert_tiling(cfg: ExpertConfig, image_size: int) -> TileLayout | None:
    """The expert's tile layout for square images of `image_size` (None: it does not tile).
    The tile side defaults to the expert's input side."""
    if cfg.tiling is None:
        return None
    side = cfg.tiling.tile_size or cfg.image_size
    if side is None:
        info = expert_info(cfg.source)
        if info is None:
            raise UnknownGeometry(f"the input side of '{cfg.source}' is unknown until it is loaded; "
                                  "set tiling.tile_size (or the expert's image_size)")
        side = info.image_size
    return tile_layout(cfg.tiling, image_size, side)


def design_tiling(experts: Sequence[tuple[str, ExpertConfig]], image_size: int) -> TileLayout | None:
    """The one tile layout of a design's experts (InvalidDesign unless every expert tiles alike:
    the fusion runs on each tile, so every expert must see the same tiles)."""
    layouts = {name: expert_tiling(cfg, image_size) for name, cfg in experts}
    distinct = set(layouts.values())
    if len(distinct) > 1:
        shown = "; ".join(f"{n}: {_shown(lay)}" for n, lay in layouts.items())
        raise InvalidDesign(f"the experts tile differently ({shown}), but the fusion runs on each tile, "
                            "so every expert needs the same tiles; give each the same `tiling` "
                            "(tile_size included: it defaults to the expert's input side), or none")
    return distinct.pop()


def _shown(layout: TileLayout | None) -> str:
    return "no tiling" if layout is None else layout.key()


def fusion_plan(point: TrialConfig) -> FusionPlan:
    """How `point`'s experts enter its fusion (raises InvalidDesign for an unshuffled primary
    of an injection fusion: its fused group is at the LM width already)."""
    ordered = point.ordered_experts()
    kind = FUSIONS.get(point.fusion.kind)
    tiling = design_tiling(ordered, point.data.image_size)
    if not kind.injects:
        return FusionPlan(tuple(ordered), tiling=tiling)
    (name, primary), rest = ordered[0], ordered[1:]
    readers = rest if kind.on_primary else ordered
    unread = tuple(n for n, cfg in readers if cfg.reduces)
    if not kind.on_primary or not primary.reduces:
        return FusionPlan(tuple((n, _full(cfg)) for n, cfg in ordered), None, unread, tiling)
    if not REDUCTIONS.get(primary.reduce_name).width_preserving:
        raise InvalidDesign(f"{point.fusion.kind} reduces its fused tokens (at the LM width) by its "
                            f"primary '{name}''s reduction, which reduce: {_text(primary.reduce)} would "
                            "widen; use reduce: pool or resize on it")
    # a width-preserving mapping has its own grid, so it needs no layer grid to resolve
    return FusionPlan(tuple((n, _full(cfg)) for n, cfg in ordered), primary.resolved(None), unread, tiling)


def _text(reduce: object) -> str:
    return reduce.text() if isinstance(reduce, ReduceSpec) else str(reduce)


def _full(cfg: ExpertConfig) -> ExpertConfig:
    """The expert at its full resolution (no reduction of its own)."""
    return cfg.model_copy(update={"tokens": None, "reduce": "pool"}) if cfg.reduces else cfg


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
    plan = fusion_plan(point)
    grids = [expert_grid(cfg) for _, cfg in plan.experts]
    if FUSIONS.get(point.fusion.kind).live_primary:
        _check_inside(point, plan)
    groups = FUSIONS.get(point.fusion.kind).groups(point.fusion, grids)  # of one image (one tile)
    return groups_cost(plan.lm_groups(groups), point.positions)


def _check_inside(point: TrialConfig, plan: FusionPlan) -> None:
    """An operator inside the primary (mr_adapter) needs a ViT with blocks, read at its width."""
    name, cfg = plan.experts[0]
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
    for other, scfg in plan.experts[1:]:
        for target in {inner, expert_grid(cfg)}:  # the adapters inside, the final align after
            _check_pooling(kind, other, expert_grid(scfg), target)


def _check_pooling(kind: str, name: str, grid: Grid, target: Grid) -> None:
    """LLaVA-HR avg-pools a larger secondary by an integer ratio (it interpolates a smaller one)."""
    if grid[0] * grid[1] > target[0] * target[1] and (grid[0] % target[0] or grid[1] % target[1]):
        raise InvalidDesign(f"{kind} pools {name}'s {grid[0]}x{grid[1]} grid to the primary's "
                            f"{target[0]}x{target[1]} by an integer ratio; give {name} an `image_size` "
                            "whose grid is a multiple of it, or the primary a larger `image_size`")


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


# an expert value's grid reduced, at full resolution, the tokens / reduce its fused group gets as
# a primary (`_after_reduction`), and its tile layout (as a tuple)
Geom = tuple[Grid, Grid, int, str, tuple[object, ...]]
NO_GRID: Grid = (0, 0)              # unknown until loaded, or its reduction cannot apply


def _geometry(cfg: ExpertConfig, image_size: int) -> tuple[Geom, bool]:
    """The expert value's `Geom` and whether a grid of it is unknown without loading it."""
    grids, unknown = [], False
    for one in (cfg, _full(cfg)):
        try:
            grids.append(expert_grid(one))
        except UnknownGeometry:
            grids.append(NO_GRID)
            unknown = True
        except InvalidDesign:
            grids.append(NO_GRID)
    try:
        layout = expert_tiling(cfg, image_size)
    except UnknownGeometry:
        return (NO_GRID, NO_GRID, *_after_reduction(cfg), ()), True
    tiles = () if layout is None else dataclasses.astuple(layout)
    return (grids[0], grids[1], *_after_reduction(cfg), tiles), unknown


def _after_reduction(cfg: ExpertConfig) -> tuple[int, str]:
    """(tokens, name) by which an on-primary injection fusion would reduce its fused group with
    `cfg` as the primary (tokens 0: none; a widening one is refused there, whatever its tokens)."""
    if not cfg.reduces:
        return 0, "pool"
    if not REDUCTIONS.get(cfg.reduce_name).width_preserving:
        return cfg.tokens or 1, cfg.reduce_name
    after = cfg.resolved(None)
    return after.tokens or 0, after.reduce


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
    grid_sets: dict[str, tuple[Geom, ...]] = {}
    for name, node in compiled.experts.items():
        geoms = set()
        for v in values(node, "low"):
            geom, missing = _geometry(ExpertConfig(**v), compiled.space.data.image_size)
            unknown |= missing
            if geom[:2] != (NO_GRID, NO_GRID):
                geoms.add(geom)
        if geoms:
            grid_sets[name] = tuple(sorted(geoms))
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


def _entry_grids(kind: FusionKind, combo: Sequence[Geom]) -> list[Grid] | None:
    """The grids the fusion reads from these experts (`fusion_plan`'s rule); None: invalid."""
    if kind.injects:
        first = combo[0]
        if kind.on_primary and first[2] and not REDUCTIONS.get(first[3]).width_preserving:
            return None
        grids = [g[1] for g in combo]
    else:
        grids = [g[0] for g in combo]
    return None if NO_GRID in grids else grids


@functools.lru_cache(maxsize=4096)
def _option_costs(option: FusionOption, first: tuple[Geom, ...], rest: tuple[tuple[Geom, ...], ...],
                  positions: tuple[str, ...]) -> frozenset[tuple[int, int]]:
    """(tokens, positions) of one fusion option over every grid multiset."""
    kind = FUSIONS.get(option.kind)
    params = {kind.params.model_validate(v) for v in values(option.node, "low")}
    out: set[tuple[int, int]] = set()
    for p, combo in itertools.product(params, _multisets(first, rest)):
        grids = _entry_grids(kind, combo)
        if grids is None or len({g[4] for g in combo}) > 1:  # experts tiling differently: invalid
            continue
        try:
            groups = kind.groups(p, grids)
        except InvalidDesign:
            continue
        tokens, reduce, tiles = combo[0][2:]
        if kind.on_primary and tokens:
            groups = [reduced(g, 1, tokens, reduce)[0] for g in groups]
        if tiles:
            groups = TileLayout(*tiles).groups(groups)  # type: ignore[arg-type]
        out |= {(c.visual_tokens, c.positions_used) for c in (groups_cost(groups, s) for s in positions)}
    return frozenset(out)


def _multisets(first: tuple[Geom, ...], rest: tuple[tuple[Geom, ...], ...]) -> set[tuple[Geom, ...]]:
    """Each choice of the first expert's value, then the others' as a sorted multiset."""
    tails: set[tuple[Geom, ...]] = {()}
    for options in rest:
        tails = {tuple(sorted((*tail, g))) for tail in tails for g in options}
    return {(g, *tail) for g in first for tail in tails}
