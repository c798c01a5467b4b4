"""Text the command line prints: a space's summary, its errors, registry listings."""

from __future__ import annotations

from search_space import (
    BACKENDS,
    EARLY_STOPPING,
    EVALUATORS,
    FAMILIES,
    FUSIONS,
    LM_PRESETS,
    METRICS,
    POSITIONS,
    PRESETS,
    PROJECTORS,
    SAMPLERS,
    CompiledSpace,
    InvalidDesign,
    Loaded,
    SpaceError,
    TrialConfig,
    UnknownGeometry,
    compile_space,
    point_cost,
    space_cost_range,
)
from vlmsearch.resources_view import point_lines, space_lines


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
        lines += _point_cost_lines(point) + point_lines(point, space.search.resources) \
            if point.trains_vlm else [
            f"  evaluator: {point.evaluator}; parameters: "
            + ", ".join(f"{k}={v}" for k, v in point.parameters.items())]
    else:
        size = compiled.size()
        lines.append(f"{loaded.source}: valid search space '{space.name}'")
        lines.append(f"  free parameters ({len(free)}): {', '.join(free)}")
        unbounded = f"unbounded (continuous: {', '.join(compiled.continuous_parameters())})"
        lines.append(f"  space size: {size if size is not None else unbounded}")
        lines += _vlm_lines(compiled) + space_lines(compiled, space.search.resources) \
            if space.trains_vlm else [
            f"  evaluator: {space.evaluator} ({EVALUATORS.description(space.evaluator)})"]
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


def _point_cost_lines(point: TrialConfig) -> list[str]:
    try:
        cost = point_cost(point)
    except (UnknownGeometry, InvalidDesign) as exc:
        return [f"  visual tokens: unknown ({exc})"]
    shown = " + ".join(f"{h}x{w}" for h, w in cost.groups)
    return [f"  visual tokens: {cost.visual_tokens}  (groups {shown})",
            f"  positions used: {cost.positions_used}  ({point.positions})"]


def _vlm_lines(compiled: CompiledSpace) -> list[str]:
    cost = space_cost_range(compiled)
    return [f"  expert subsets: {len(compiled.subsets)} of pool {', '.join(compiled.space.pool)}",
            f"  fusion kinds: {', '.join(o.label for o in compiled.fusions)}",
            f"  visual tokens: {_span(cost.tokens, cost.complete)}",
            f"  positions used: {_span(cost.positions, cost.complete)}"]


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
                  "projectors": PROJECTORS, "metrics": METRICS, "evaluators": EVALUATORS,
                  "backends": BACKENDS, "samplers": SAMPLERS, "early_stopping": EARLY_STOPPING}
    if what == "presets":
        return _presets()
    registry = registries[what]
    return [f"{name:<18} {registry.description(name)}" for name in registry.names()]
