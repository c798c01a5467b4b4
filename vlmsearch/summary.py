"""Text the command line prints: a space's summary, its errors, registry listings."""

from __future__ import annotations

from search_space.components import METRICS, POSITIONS, PROJECTORS
from search_space.cost import UnknownGeometry, point_cost, space_cost_range
from search_space.errors import InvalidDesign, SpaceError
from search_space.fusions import FUSIONS
from search_space.load import Loaded
from search_space.presets import FAMILIES, LM_PRESETS, PRESETS
from search_space.sampling import compile_space


def describe_errors(error: SpaceError) -> str:
    noun = "problem" if len(error.problems) == 1 else "problems"
    lines = [f"{error.source}: invalid, {len(error.problems)} {noun}:"]
    lines += [f"  {problem}" for problem in error.problems]
    return "\n".join(lines)


def _span(pair: tuple[int, int] | None, complete: bool) -> str:
    if pair is None:
        return "unknown (set `tokens` on experts whose geometry is unknown)"
    low, high = pair
    text = str(low) if low == high else f"{low} .. {high}"
    return text if complete else f"{text} (some experts' grids unknown)"


def summarize(loaded: Loaded) -> str:
    space, compiled = loaded.space, compile_space(loaded.space)
    free = compiled.free_parameters()
    lines = []
    if not free:
        point = compiled.only_point()
        lines.append(f"{loaded.source}: valid point '{space.name}' (config hash {point.config_hash})")
        lines.append("  free parameters: 0")
        try:
            cost = point_cost(point)
            shown = " + ".join(f"{h}x{w}" for h, w in cost.groups)
            lines.append(f"  visual tokens: {cost.visual_tokens}  (groups {shown})")
            lines.append(f"  positions used: {cost.positions_used}  ({point.positions})")
        except (UnknownGeometry, InvalidDesign) as exc:
            lines.append(f"  visual tokens: unknown ({exc})")
    else:
        size = compiled.size()
        lines.append(f"{loaded.source}: valid search space '{space.name}'")
        lines.append(f"  free parameters ({len(free)}): {', '.join(free)}")
        unbounded = f"unbounded (continuous: {', '.join(compiled.continuous_parameters())})"
        lines.append(f"  space size: {size if size is not None else unbounded}")
        lines.append(f"  expert subsets: {len(compiled.subsets)} of pool "
                     f"{', '.join(space.pool)}")
        lines.append(f"  fusion kinds: {', '.join(o.label for o in compiled.fusions)}")
        cost = space_cost_range(compiled)
        lines.append(f"  visual tokens: {_span(cost.tokens, cost.complete)}")
        lines.append(f"  positions used: {_span(cost.positions, cost.complete)}")
    if space.objectives:
        lines.append("  objectives: " + ", ".join(f"{o.direction} {o.metric}"
                                                   for o in space.objectives))
    for c in space.constraints:
        bounds = " and ".join(b for b in (f">= {c.min:g}" if c.min is not None else "",
                                          f"<= {c.max:g}" if c.max is not None else "") if b)
        lines.append(f"  constraint: {c.metric} {bounds}")
    if free:
        s = space.search
        lines.append(f"  search: {s.backend}/{s.sampler}, {s.trials} trials, concurrency "
                     f"{s.concurrency}, early stopping {s.early_stopping.kind}")
    return "\n".join(lines)


def _presets() -> list[str]:
    lines = []
    for name, info in PRESETS.items():
        grids = sorted({info.grid(layer) for layer in range(info.num_layers + 1)}, reverse=True)
        shown = "/".join(f"{h}x{w}" for h, w in grids)
        lines.append(f"{name:<16} {info.family:<9} depth {info.num_layers}, width {info.width}, "
                     f"grid {shown} @{info.image_size}px  {PRESETS.description(name)}")
    lines += [f"{name:<16} {'llm':<9} {LM_PRESETS.description(name)}" for name in LM_PRESETS.names()]
    return lines


def registry_lines(what: str) -> list[str]:
    """One line per registry entry: name, then what it is."""
    registries = {"experts": FAMILIES, "fusions": FUSIONS, "positions": POSITIONS,
                  "projectors": PROJECTORS, "metrics": METRICS}
    if what == "presets":
        return _presets()
    registry = registries[what]
    return [f"{name:<18} {registry.description(name)}" for name in registry.names()]
