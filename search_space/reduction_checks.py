"""The checks of experts' reductions (`tokens`, `reduce`) for `vlmsearch check`: each problem at
the key that sets it, naming the fix (search_space.checks runs them)."""

from __future__ import annotations

from pydantic import ValidationError

from search_space.cost import expert_grid, fusion_plan
from search_space.errors import InvalidDesign, Problem, SectionError, UnknownGeometry
from search_space.point import ExpertConfig
from search_space.reductions import REDUCTIONS, ReduceSpec, TokensDisagree
from search_space.sampling import compile_space, values
from search_space.space import SearchSpace


def tokens_fit(space: SearchSpace) -> list[Problem]:
    """`tokens` (or a `reduce` mapping's grid) must not exceed the expert's own grid (pooling and
    unshuffling only reduce; a bilinear resize may enlarge, as EAGLE's does), and `tokens`
    beside a mapping must be its grid's (the rule of `ExpertConfig`, here for every value)."""
    out = []
    compiled = compile_space(space)
    for name, node in compiled.experts.items():
        for v in values(node, "low"):
            try:
                cfg = ExpertConfig(**v)
            except ValidationError as exc:
                out += [p for p in _rule_problems(space.expert_path(name), exc) if p not in out]
                continue
            try:
                if not cfg.reduces or cfg.reduce_name == "resize":
                    continue
                tokens = cfg.resolved(None).tokens or 0
                grid = expert_grid(cfg.model_copy(update={"tokens": None, "reduce": "pool"}))
            except (UnknownGeometry, InvalidDesign, ValidationError, IndexError):
                continue
            if tokens > grid[0] * grid[1]:
                problem = _too_many(space.expert_path(name), cfg, tokens, grid)
                if problem not in out:
                    out.append(problem)
    return out


def _rule_problems(path: tuple, error: ValidationError) -> list[Problem]:
    """The whole-model rules of an expert value that broke (its fields validated in the space)."""
    out = []
    for err in error.errors():
        raised = (err.get("ctx") or {}).get("error")
        if isinstance(raised, SectionError):
            out.append(Problem((*path, *raised.path), str(raised)))
    return out


def _too_many(path: tuple, cfg: ExpertConfig, tokens: int, grid: tuple[int, int]) -> Problem:
    where = f"{cfg.source}'s {grid[0]}x{grid[1]} grid at layers {cfg.layers}"
    if isinstance(cfg.reduce, str):
        return Problem((*path, "tokens"), f"tokens {tokens} exceeds {where}; use at most "
                       f"{grid[0] * grid[1]}, raise image_size, or enlarge it with reduce: resize")
    return Problem((*path, "reduce", "grid"), f"reduce {cfg.reduce.text()} ({tokens} tokens) exceeds "
                   f"{where}; use grid at most {min(grid)}, raise image_size, or enlarge it with "
                   "kind: resize")


def _mapping_problems(path: tuple, cfg: ExpertConfig) -> list[Problem]:
    """A `reduce` mapping that does not fit the expert's layers, at its key (else point_designs
    would name it at `fusion`)."""
    if not isinstance(cfg.reduce, ReduceSpec):
        return []
    try:
        expert_grid(cfg)
    except TokensDisagree as exc:
        return [Problem((*path, "tokens"), str(exc))]
    except InvalidDesign as exc:
        return [Problem((*path, "reduce"), str(exc))]
    except UnknownGeometry:
        pass
    return []


def _own_target(name: str) -> str:
    spec = REDUCTIONS.get(name).spec
    return f", or write it with its own target ({spec.example})" if spec else ""


def _reduction_key(cfg: ExpertConfig) -> str:
    """The key that sets the expert's reduction: `tokens`, else its `reduce` mapping."""
    return "tokens" if cfg.tokens is not None else "reduce"


def unread_reductions(space: SearchSpace) -> list[Problem]:
    """A point's `tokens`/`reduce` must be read: `reduce` says how to reach `tokens`, and an
    injection fusion reads its secondaries at full resolution (`cost.fusion_plan`)."""
    compiled = compile_space(space)
    if compiled.free_parameters() or not compiled.subsets:
        return []
    try:
        point = compiled.only_point()
    except ValidationError:
        return []
    out = [Problem((*space.expert_path(name), "reduce"), f"reduce: {cfg.reduce} says how the expert "
                   "reaches `tokens`, but tokens is null (every token kept); set tokens, or leave "
                   f"reduce out{_own_target(cfg.reduce)}") for name, cfg in point.experts.items()
           if isinstance(cfg.reduce, str) and cfg.tokens is None and cfg.reduce != "pool"]
    try:
        unread = fusion_plan(point).unread
    except InvalidDesign:
        return out  # point_designs names it
    out += [p for name, cfg in point.experts.items() if name not in unread
            for p in _mapping_problems(space.expert_path(name), cfg)]
    kind = point.fusion.kind
    return out + [Problem((*space.expert_path(name), _reduction_key(point.experts[name])),
                          f"{kind} reads windows of '{name}' at "
                          "its full resolution (M x M of its tokens per fused token), so its tokens "
                          "and reduce are not read; remove them (the primary's reduction, for "
                          "mr_adapter / cross_attention, reduces the fused tokens)") for name in unread]
