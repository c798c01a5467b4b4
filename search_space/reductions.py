"""Token reduction of an expert's layer to `tokens` (REFERENCE.md, "Token reduction"), torch-free.

Each reduction (YAML `reduce:` of an expert) says which grid and width a layer of grid h x w
leaves at a sqrt(tokens) square: the cost model and the resource model read these rules, and
`trials.vlm.reduce.REDUCE_FUNCTIONS` applies them to tensors under the same names.

- `pool`: adaptive average pooling to s x s (the width stays);
- `resize`: bilinear resize to s x s, `align_corners=True` (EAGLE; the width stays);
- `unshuffle`: pixel-unshuffle (LEO) by r = h / s, a whole factor of a square grid: s x s
  tokens, each the r x r window's C-vectors in row-major order, so the width is C * r^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from search_space.errors import InvalidDesign
from search_space.registry import Registry

Grid = tuple[int, int]


@dataclass(frozen=True)
class Reduction:
    """How one layer's (grid, width) becomes the expert's final s x s grid."""

    widen: Callable[[Grid, int], int]  # (layer grid, side s) -> channel multiplier
    width_preserving: bool = True      # it can reduce an already projected group (the LM width)


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
REDUCTIONS.register("pool", Reduction(lambda grid, side: 1),
                    "adaptive average pooling to a sqrt(tokens) square (the default)")
REDUCTIONS.register("resize", Reduction(lambda grid, side: 1),
                    "bilinear resize to a sqrt(tokens) square, align_corners=True (EAGLE)")
REDUCTIONS.register("unshuffle", Reduction(lambda grid, side: unshuffle_factor(grid, side) ** 2, False),
                    "pixel-unshuffle by r = side / sqrt(tokens): r x r windows into channels (LEO)")


def reduced(grid: Grid, width: int, tokens: int | None, reduce: str) -> tuple[Grid, int]:
    """(grid, width) of a layer after reducing it to `tokens` (None: kept as it is)."""
    if tokens is None:
        return grid, width
    side = math.isqrt(tokens)
    return (side, side), width * REDUCTIONS.get(reduce).widen(grid, side)
