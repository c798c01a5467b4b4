"""Attention pieces shared by the query-based operators (cross_attention, resampler, sva).

`windows` cuts a map into the M x M windows under a coarser grid; `MultiHead` attends queries to
the keys of several sources, each with its own K/V projections.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space import Grid
from trials.vlm.reduce import Features, pixel_unshuffle_tokens, resize_grid


def window_side(grid: Grid, base: Grid) -> int:
    """M = max(1, round(side / base side)); a side is sqrt(h*w), so non-square grids work too."""
    return max(1, round(math.sqrt(grid[0] * grid[1] / (base[0] * base[1]))))


def windows(feats: Features, base: Grid) -> Tensor:
    """(B, N, C) -> (B, h*w, M*M, C): the map resized to (M*h, M*w), cut in the windows of `base`."""
    m, (h, w) = window_side(feats.grid, base), base
    fine = resize_grid(feats.tokens, feats.grid, (m * h, m * w))  # (B, M*h * M*w, C)
    cells, _ = pixel_unshuffle_tokens(fine, (m * h, m * w), m)     # (B, h*w, M*M*C), window row-major
    return cells.unflatten(-1, (m * m, feats.width))               # (B, h*w, M*M, C)


class MultiHead(nn.Module):
    """Multi-head attention of queries to the keys of several sources, each with its K/V projections.

    Leading dims are batch dims, so per-query windows are `(B, N, 1, C)` queries on `(B, N, L, C)`
    keys. The inner width is `out_dim` rounded up to a multiple of `heads` (any head count fits).
    """

    def __init__(self, q_dim: int, kv_dims: Sequence[int], out_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * math.ceil(out_dim / heads)
        self.q = nn.Linear(q_dim, inner)
        self.k = nn.ModuleList(nn.Linear(d, inner) for d in kv_dims)
        self.v = nn.ModuleList(nn.Linear(d, inner) for d in kv_dims)
        self.out = nn.Linear(inner, out_dim)

    def split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)  # (..., n, D) -> (..., H, n, D/H)

    def forward(self, q: Tensor, sources: Sequence[Tensor]) -> Tensor:
        """q (..., Nq, q_dim), sources[i] (..., L_i, kv_dims[i]) -> (..., Nq, out_dim)."""
        k = torch.cat([p(s) for p, s in zip(self.k, sources, strict=True)], dim=-2)  # (..., L, D)
        v = torch.cat([p(s) for p, s in zip(self.v, sources, strict=True)], dim=-2)  # (..., L, D)
        a = F.scaled_dot_product_attention(self.split(self.q(q)), self.split(k), self.split(v))
        return self.out(a.transpose(-3, -2).flatten(-2))  # (..., H, Nq, D/H) -> (..., Nq, out_dim)
