"""Token reduction of an expert's layer to `tokens` (REFERENCE.md, "Token reduction"), torch-free.

Each reduction (YAML `reduce:` of an expert) says which grid and width a layer of grid h x w
leaves at a sqrt(tokens) square: the cost model and the resource model read these rules, and
`trials.vlm.reduce.REDUCE_FUNCTIONS` applies them to tensors under the same names.

- `pool`: adaptive average pooling to s x s (the width stays);
- `resize`: bilinear resize to s x s, `align_corners=True` (EAGLE; the width stays);
- `unshuffle`: pixel-unshuffle (LEO) by r = h / s, a whole factor of a square grid: s x s
  tokens, each the r x r window's C-vectors in row-major order, so the width is C * r^2.

`reduce:` is a name (the target from the expert's `tokens`) or a mapping that carries its own
target (CONTRACT.md): `{kind: unshuffle, factor: R}` (s = h / R), `{kind: resize, grid: G}`,
`{kind: pool, grid: G}` (s = G). `resolve_tokens` turns a mapping into the `tokens` of the
equivalent name form, which is what the cost model and the modules then read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Tag,
    model_validator,
)

from search_space.errors import InvalidDesign, UnknownGeometry
from search_space.numbers import PositiveInt
from search_space.ranges import TAG
from search_space.registry import Registry, unknown_name_message

Grid = tuple[int, int]


class ReduceSpec(BaseModel):
    """The mapping form of `reduce:`: the reduction (`kind`) and its own target."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    example: ClassVar[str]

    kind: str

    def side(self, grid: Grid) -> int:
        """The side s of the s x s grid a layer of `grid` is reduced to."""
        raise NotImplementedError

    def own_side(self) -> int | None:
        """The side whatever the layer's grid (None: it follows from the grid)."""
        return None

    def text(self) -> str:
        """As YAML writes it: `{kind: unshuffle, factor: 4}`."""
        return "{" + ", ".join(f"{k}: {v}" for k, v in self.model_dump().items()) + "}"

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        return keys_checked(cls)(data)


class ToGrid(ReduceSpec):
    grid: PositiveInt  # the side G of the G x G target

    def side(self, grid: Grid) -> int:
        return self.grid

    def own_side(self) -> int | None:
        return self.grid


class PoolTo(ToGrid):
    example: ClassVar[str] = "{kind: pool, grid: 12}"
    kind: Literal["pool"] = "pool"


class ResizeTo(ToGrid):
    example: ClassVar[str] = "{kind: resize, grid: 24}"
    kind: Literal["resize"] = "resize"


class UnshuffleBy(ReduceSpec):
    example: ClassVar[str] = "{kind: unshuffle, factor: 2}"
    kind: Literal["unshuffle"] = "unshuffle"
    factor: PositiveInt  # r: each r x r window becomes one token, r^2 times as wide

    def side(self, grid: Grid) -> int:
        h, w = grid
        if h != w:
            raise InvalidDesign(f"reduce {self.text()} needs a square grid, got {h}x{w}; use "
                                "{kind: pool, grid: G} or {kind: resize, grid: G}")
        if h % self.factor:
            whole = [r for r in range(2, h + 1) if h % r == 0]
            fix = f"use factor one of {', '.join(map(str, whole))}" if whole else "use pool or resize"
            raise InvalidDesign(f"reduce {self.text()} folds whole {self.factor}x{self.factor} windows "
                                f"of the {h}x{w} grid into one token, but {self.factor} does not divide "
                                f"{h}; {fix}")
        return h // self.factor


def keys_problem(spec: type[BaseModel], data: Any) -> str | None:
    """Why a `reduce:` mapping does not fit its kind's keys (one message naming the fix), or None."""
    if not isinstance(data, dict):
        return None
    own = {name for name in spec.model_fields if name != "kind"}
    kind = data.get("kind")
    extra, missing = sorted(set(data) - own - {"kind"}), sorted(own - set(data))
    if not extra and not missing:
        return None
    example = getattr(spec, "example", "")
    took = f"; got {', '.join(extra)}" if extra else ""
    return f"reduce {{kind: {kind}}} takes {', '.join(sorted(own))}{took}: write e.g. {example}"


def keys_checked(spec: type[BaseModel]) -> Callable[[Any], Any]:
    """A before-validator refusing a mapping whose keys do not fit `spec` (its space form too)."""

    def check(data: Any) -> Any:
        problem = keys_problem(spec, data)
        if problem:
            raise ValueError(problem)
        return data

    return check


def shape_problem(value: Any) -> str | None:
    """Why `value` is neither a reduction name nor a mapping with a known `kind`, or None."""
    forms = ", ".join(r.spec.example for _, r in REDUCTIONS.items() if r.spec)
    if isinstance(value, str):
        return None
    if not isinstance(value, dict):
        return (f"reduce is a name ({', '.join(REDUCTIONS.names())}; the target from `tokens`) or "
                f"a mapping ({forms}), not {value!r}")
    kind = value.get("kind")
    kinds = [n for n, r in REDUCTIONS.items() if r.spec]
    if kind is None:
        return f"a reduce mapping needs its `kind` ({', '.join(kinds)}): write e.g. {forms}"
    if kind not in kinds:
        return unknown_name_message("token reduction", kind, kinds)
    return None


def resolve_tokens(spec: ReduceSpec, grids: Sequence[Grid] | None, tokens: int | None,
                   source: str) -> int:
    """The `tokens` of the name form equal to `spec` on layers of `grids` (None: not known until
    the expert is loaded). `tokens` given beside the mapping must agree with it."""
    own = spec.own_side()
    if own is None and grids is None:
        raise UnknownGeometry(f"the grid of '{source}' is unknown until it is loaded, so reduce "
                              f"{spec.text()} gives no known token count; write `tokens` with reduce: "
                              f"{spec.kind}, or a mapping with its own grid")
    sides = [own] if own is not None else sorted({spec.side(g) for g in grids or ()}, reverse=True)
    if len(sides) > 1:
        shown = ", ".join(f"{s}x{s}" for s in sides)
        raise InvalidDesign(f"reduce {spec.text()} takes {source}'s selected layers to different grids "
                            f"({shown}); select layers of one grid, or write tokens with reduce: "
                            f"{spec.kind} (each layer reduced to that grid)")
    target = sides[0] ** 2
    if tokens is not None and tokens != target:
        raise TokensDisagree(tokens_problem(spec, tokens, target))
    return target


class TokensDisagree(InvalidDesign):
    """`tokens` beside a `reduce` mapping that sets another grid (drop `tokens`)."""


def tokens_problem(spec: ReduceSpec, tokens: int, target: int) -> str:
    side = math.isqrt(target)
    return (f"tokens: {tokens} disagrees with reduce {spec.text()}, which gives {target} tokens "
            f"({side}x{side}); drop tokens (the mapping sets the grid), or write reduce: {spec.kind} "
            "with tokens")


@dataclass(frozen=True)
class Reduction:
    """How one layer's (grid, width) becomes the expert's final s x s grid."""

    widen: Callable[[Grid, int], int]  # (layer grid, side s) -> channel multiplier
    width_preserving: bool = True      # it can reduce an already projected group (the LM width)
    spec: type[ReduceSpec] | None = None  # its mapping form in YAML (`reduce: {kind: ...}`)


def unshuffle_factor(grid: Grid, side: int) -> int:
    """r of a pixel-unshuffle from `grid` to side x side (InvalidDesign naming valid tokens)."""
    h, w = grid
    if h != w:
        raise InvalidDesign(f"reduce: unshuffle needs a square grid, got {h}x{w}; use reduce: pool "
                            "or resize")
    if side <= 0 or h % side:
        valid = ", ".join(str((h // r) ** 2) for r in range(1, h + 1) if h % r == 0)
        raise InvalidDesign(f"reduce: unshuffle folds whole r x r windows of the {h}x{w} grid into "
                            f"one token, so {side * side} tokens ({side}x{side}) cannot come from "
                            f"it; use tokens one of {valid}, or reduce: pool / resize")
    return h // side


REDUCTIONS: Registry[Reduction] = Registry("token reduction")
REDUCTIONS.register("pool", Reduction(lambda grid, side: 1, spec=PoolTo),
                    "adaptive average pooling to a sqrt(tokens) square (the default)")
REDUCTIONS.register("resize", Reduction(lambda grid, side: 1, spec=ResizeTo),
                    "bilinear resize to a sqrt(tokens) square, align_corners=True (EAGLE)")
REDUCTIONS.register("unshuffle", Reduction(lambda grid, side: unshuffle_factor(grid, side) ** 2, False,
                                           UnshuffleBy),
                    "pixel-unshuffle by r = side / sqrt(tokens): r x r windows into channels (LEO)")


def reduced(grid: Grid, width: int, tokens: int | None, reduce: str) -> tuple[Grid, int]:
    """(grid, width) of a layer after reducing it to `tokens` (None: kept as it is)."""
    if tokens is None:
        return grid, width
    side = math.isqrt(tokens)
    return (side, side), width * REDUCTIONS.get(reduce).widen(grid, side)


# ---- the YAML field ---------------------------------------------------------------------------

def _registered(name: str) -> str:
    if name not in REDUCTIONS:
        raise ValueError(REDUCTIONS.unknown(name))
    return name


ReductionName = Annotated[str, AfterValidator(_registered)]


def _reduce_shape(value: Any) -> str | None:
    if isinstance(value, str):
        return TAG + "name"
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return TAG + kind if isinstance(kind, str) else None


def _reduce_form(value: Any) -> Any:
    problem = shape_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def reduce_union(wrap: Callable[[type[ReduceSpec]], Any]) -> Any:
    """`reduce:` as a name of REDUCTIONS (the target from `tokens`) or a mapping tagged by `kind`
    that carries its own target (each spec through `wrap`: the space makes its keys tunable)."""
    members = tuple(Annotated[wrap(r.spec), BeforeValidator(keys_checked(r.spec)), Tag(TAG + name)]
                    for name, r in REDUCTIONS.items() if r.spec)
    return Annotated[Union[(Annotated[ReductionName, Tag(TAG + "name")], *members)],
                     Discriminator(_reduce_shape), BeforeValidator(_reduce_form)]


Reduce = reduce_union(lambda spec: spec)  # an expert's `reduce:` in a point
