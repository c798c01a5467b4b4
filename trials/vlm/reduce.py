"""Token reduction on an expert's 2-D grid, and the merges of several layers of one expert.

REFERENCE.md, "Layer selection and merging" and "Token reduction": each selected layer is
reduced to the expert's `tokens` by its `reduce` (`REDUCE_FUNCTIONS`: pool, resize, unshuffle;
the grids and widths are `search_space.reductions`'), else merged layers meet at the smallest
grid among them (adaptive average pooling), or with `merge_grid: largest` at the largest
(bilinear, as Mini-Gemini upsamples its ConvNeXt stages); then concat / mean / LLN-Layerscale.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space import MERGE_GRIDS, REDUCTIONS, Registry, reduced

Grid = tuple[int, int]

__all__ = ["MERGE_MODULES", "REDUCE_FUNCTIONS", "Concat", "Features", "Grid", "LayerMerge", "LayerScale",
           "Mean", "adaptive_pool", "meet", "pixel_unshuffle_tokens", "pool_layers", "reduce_features",
           "reduce_layers", "resize_grid", "target_grid"]


@dataclass(frozen=True)
class Features:
    """One expert's tokens on their grid: `tokens` (B, h*w, C) in row-major grid order."""

    tokens: Tensor  # (B, N, C)
    grid: Grid      # (h, w), N = h * w

    def __post_init__(self) -> None:
        h, w = self.grid
        if self.tokens.dim() != 3 or self.tokens.shape[1] != h * w:
            raise ValueError(f"tokens {tuple(self.tokens.shape)} do not fit the grid {h}x{w}")

    @property
    def width(self) -> int:
        return int(self.tokens.shape[-1])


def _to_map(tokens: Tensor, grid: Grid) -> Tensor:
    b, _, c = tokens.shape  # (B, N, C)
    return tokens.transpose(1, 2).reshape(b, c, *grid)  # (B, C, h, w)


def _to_tokens(fmap: Tensor) -> Tensor:
    return fmap.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, N, C)


def adaptive_pool(tokens: Tensor, grid: Grid, out_grid: Grid) -> Tensor:
    """Adaptive average pooling of (B, h*w, C) tokens to (B, out_h*out_w, C)."""
    if tuple(grid) == tuple(out_grid):
        return tokens
    return _to_tokens(F.adaptive_avg_pool2d(_to_map(tokens, grid), tuple(out_grid)))


def resize_grid(tokens: Tensor, grid: Grid, out_grid: Grid, align_corners: bool = True) -> Tensor:
    """Bilinear resize of the token grid (EAGLE: `align_corners=True`; Mini-Gemini: False)."""
    if tuple(grid) == tuple(out_grid):
        return tokens
    fmap = F.interpolate(_to_map(tokens, grid), size=tuple(out_grid), mode="bilinear",
                         align_corners=align_corners)
    return _to_tokens(fmap)


def meet(feats: Features, grid: Grid) -> Features:
    """One layer on `grid`: pooled (adaptive average) when larger, resized up when smaller as
    Mini-Gemini resizes its ConvNeXt stages (`F.interpolate` bilinear, `align_corners=False`,
    in fp32, then back to the layer's dtype; dvlab-research/MGM openclip_encoder.py `backbone`)."""
    if tuple(feats.grid) == tuple(grid):
        return feats
    if feats.grid[0] * feats.grid[1] >= grid[0] * grid[1]:
        return Features(adaptive_pool(feats.tokens, feats.grid, grid), grid)
    up = resize_grid(feats.tokens.float(), feats.grid, grid, align_corners=False)
    return Features(up.to(feats.tokens.dtype), grid)


def pixel_unshuffle_tokens(tokens: Tensor, grid: Grid, r: int) -> tuple[Tensor, Grid]:
    """Space-to-channel by factor r: (B, h*w, C) -> (B, h/r * w/r, r*r*C).

    The channels of an output token are the C-vectors of its r x r window in row-major order
    (r0c0, r0c1, r1c0, r1c1 for r = 2), not torch's channel-major `pixel_unshuffle` order.
    """
    h, w = grid
    if h % r or w % r:
        raise ValueError(f"pixel_unshuffle by {r} needs a grid divisible by {r}, got {h}x{w}")
    b, _, c = tokens.shape
    x = tokens.reshape(b, h // r, r, w // r, r, c)      # (B, h', dr, w', dc, C)
    x = x.permute(0, 1, 3, 2, 4, 5)                     # (B, h', w', dr, dc, C)
    return x.reshape(b, (h // r) * (w // r), r * r * c), (h // r, w // r)


def target_grid(grids: Sequence[Grid], tokens: int | None, merge_grid: str = "smallest") -> Grid:
    """An expert's final grid: sqrt(tokens) square, else the smallest (`merge_grid: largest`: the
    largest) of its layers' grids, as `search_space.cost.expert_grid` computes it."""
    if tokens is None:
        return MERGE_GRIDS[merge_grid](grids)
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"tokens must be a perfect square, got {tokens}")
    return side, side


def pool_layers(feats: Sequence[Features], tokens: int | None, merge_grid: str = "smallest"
                ) -> list[Features]:
    """Every selected layer pooled (adaptive average) to the expert's final grid.

    vlmsearch rule: layers are reduced *before* they are merged, so the frozen, cacheable part of
    an expert ends at its final grid. For `mean` and `concat` this equals merging first (pooling
    is linear); for `layerscale` the LayerNorms see pooled tokens. Without `tokens`, layers
    smaller than the final grid (`merge_grid: largest`) stay on their own grids here: the merge
    resizes them up (`meet`), so the cache holds the native maps (Mini-Gemini's four ConvNeXt-L
    stages at 768 px: 13.3 M values per image, not the 106 M of the 192x192x2880 map).
    """
    grid = target_grid([f.grid for f in feats], tokens, merge_grid)
    later = tokens is None  # upsampling waits for the merge
    return [f if later and f.grid[0] * f.grid[1] < grid[0] * grid[1]
            else Features(adaptive_pool(f.tokens, f.grid, grid), grid) for f in feats]


Reduce = Callable[[Tensor, Grid, Grid], Tensor]  # (tokens (B, h*w, C), grid, out grid) -> tokens
REDUCE_FUNCTIONS: Registry[Reduce] = Registry("token reduction")  # the names of REDUCTIONS
REDUCE_FUNCTIONS.register("pool", adaptive_pool, REDUCTIONS.description("pool"))
REDUCE_FUNCTIONS.register("resize", resize_grid, REDUCTIONS.description("resize"))


@REDUCE_FUNCTIONS.decorator("unshuffle", REDUCTIONS.description("unshuffle"))
def _unshuffle(tokens: Tensor, grid: Grid, out_grid: Grid) -> Tensor:
    return pixel_unshuffle_tokens(tokens, grid, grid[0] // out_grid[0])[0]  # (B, h'*w', r*r*C)


def reduce_features(feats: Features, tokens: int | None, reduce: str) -> Features:
    """One layer (or fused group) reduced to `tokens` by `reduce` (None: as it is); its grid and
    width are `search_space.reductions.reduced`'s, which checks the reduction applies."""
    if tokens is None:
        return feats
    grid, _ = reduced(feats.grid, feats.width, tokens, reduce)
    if grid == feats.grid:
        return feats
    return Features(REDUCE_FUNCTIONS.get(reduce)(feats.tokens, feats.grid, grid), grid)


def reduce_layers(feats: Sequence[Features], tokens: int | None, reduce: str = "pool",
                  merge_grid: str = "smallest") -> list[Features]:
    """Every selected layer reduced to the expert's final grid, each on its own (`pool` is
    `pool_layers`): before the merge, so the cached part ends at the final grid. `unshuffle`
    widens each layer by its own r^2 (r = its side / sqrt(tokens)), and the merge is built on
    those widths; for `mean` and `concat` this equals reducing after the merge up to the order
    of channels (every reduction is linear), while `layerscale`'s LayerNorm and Linear
    see the reduced layers (an unshuffled one: r^2 C_i -> r^2 C_last)."""
    if tokens is None:
        return pool_layers(feats, None, merge_grid)
    return [reduce_features(f, tokens, reduce) for f in feats]


class LayerMerge(nn.Module, abc.ABC):
    """Merges the selected layers of one expert into one `Features` (a single layer passes)."""

    def __init__(self, widths: Sequence[int], merge_grid: str = "smallest") -> None:
        super().__init__()
        if not widths:
            raise ValueError("a layer merge needs at least one layer")
        self.widths = tuple(int(w) for w in widths)
        self.out_width = self.width_after(self.widths)
        self.merge_grid = merge_grid  # where the layers meet (ExpertConfig.merge_grid)

    @staticmethod
    def width_after(widths: Sequence[int]) -> int:
        """Channels after the merge of layers this wide (default: the last layer's width)."""
        return int(widths[-1])

    def forward(self, feats: Sequence[Features]) -> Features:
        if len(feats) != len(self.widths):
            raise ValueError(f"expected {len(self.widths)} layers, got {len(feats)}")
        if len(feats) == 1:
            return feats[0]
        grid = target_grid([f.grid for f in feats], None, self.merge_grid)
        aligned = [meet(f, grid) for f in feats]  # equal already after `pool_layers`, but upsampling
        return Features(self.combine([f.tokens for f in aligned]), grid)

    @abc.abstractmethod
    def combine(self, tokens: list[Tensor]) -> Tensor:
        """Each (B, N, C_i) -> (B, N, C_out)."""


MERGE_MODULES: Registry[type[LayerMerge]] = Registry("layer merge")


@MERGE_MODULES.decorator("concat", "concatenate the selected layers' channels")
class Concat(LayerMerge):
    @staticmethod
    def width_after(widths: Sequence[int]) -> int:
        return int(sum(widths))

    def combine(self, tokens: list[Tensor]) -> Tensor:
        return torch.cat(tokens, dim=-1)  # (B, N, sum C_i)


@MERGE_MODULES.decorator("mean", "average the selected layers (they must be equally wide)")
class Mean(LayerMerge):
    def __init__(self, widths: Sequence[int], merge_grid: str = "smallest") -> None:
        if len(set(widths)) > 1:
            raise ValueError(f"merge 'mean' needs layers of one width, got widths {list(widths)}; "
                             "use merge 'concat' or 'layerscale', or pick equally wide layers")
        super().__init__(widths, merge_grid)

    def combine(self, tokens: list[Tensor]) -> Tensor:
        return torch.stack(tokens).mean(dim=0)  # (B, N, C)


@MERGE_MODULES.decorator("layerscale", "COMM's LLN-Layerscale: sum_i softmax(a)_i * Linear_i(LN_i(x_i))")
class LayerScale(LayerMerge):
    """`v = sum_i softmax(a)_i * (W_i LN_i(x_i) + b_i)`; W_i: C_i -> C_out (the last layer's width)."""

    def __init__(self, widths: Sequence[int], merge_grid: str = "smallest") -> None:
        super().__init__(widths, merge_grid)
        merged = self.widths if len(self.widths) > 1 else ()  # one layer passes unchanged
        self.norms = nn.ModuleList(nn.LayerNorm(w) for w in merged)
        self.projs = nn.ModuleList(nn.Linear(w, self.out_width) for w in merged)
        if merged:
            self.logits = nn.Parameter(torch.zeros(len(merged)))  # equal weights at start
        else:
            self.register_parameter("logits", None)

    def combine(self, tokens: list[Tensor]) -> Tensor:
        weights = torch.softmax(self.logits, dim=0)
        parts = [proj(norm(x)) for x, norm, proj in zip(tokens, self.norms, self.projs, strict=True)]
        return torch.einsum("l,lbnc->bnc", weights, torch.stack(parts))  # (B, N, C_out)
