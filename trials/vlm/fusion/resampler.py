"""Resampler (MouSi's Q-Former option; Perceiver-style): m learnable queries per expert.

REFERENCE.md: per expert, `queries` learnable queries of the resampler's width (`width`; the
LM's by default) cross-attend to that expert's tokens (projected to that width by the expert's
own projector) through `depth` layers of `q = q + MHA(LN(q), kv, kv); q = q + MLP(LN(q))`, then
Linear(width -> d) when the width is not the LM's. E groups of m tokens, each on a sqrt(m) x
sqrt(m) grid when m is a perfect square, else a 1 x m row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from search_space import Grid, Resampler, is_square
from trials.vlm.fusion.attention import MultiHead
from trials.vlm.fusion.base import FUSION_MODULES, FusionModule, Projector, VisualTokens
from trials.vlm.projectors import make_projector
from trials.vlm.reduce import Features


def query_grid(m: int) -> Grid:
    """The grid of m queries: square when m is a perfect square, else one row."""
    return (math.isqrt(m), math.isqrt(m)) if is_square(m) else (1, m)


class PerceiverLayer(nn.Module):
    """`q = q + MHA(LN(q), kv, kv); q = q + MLP(LN(q))`, width d, MLP ratio 4."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(d)
        self.attn = MultiHead(d, [d], d, heads)
        self.mlp_norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, q: Tensor, kv: Tensor) -> Tensor:
        q = q + self.attn(self.attn_norm(q), [kv])  # (B, m, d)
        return q + self.mlp(self.mlp_norm(q))       # (B, m, d)


class ExpertResampler(nn.Module):
    """One expert's projector, queries and layers at the resampler's width w (the LM's d by
    default), then Linear(w -> d) when w differs: (B, N, C) -> (B, m, d); `run` applies a layer
    (the fusion's `block`, which may checkpoint it)."""

    def __init__(self, width: int, d: int, params: Resampler, projector: str) -> None:
        super().__init__()
        w = params.width or d
        self.proj = make_projector(projector, width, w)
        self.queries = nn.Parameter(torch.randn(params.queries, w) * 0.02)  # (m, w)
        self.layers = nn.ModuleList(PerceiverLayer(w, params.heads) for _ in range(params.depth))
        self.out = nn.Linear(w, d) if w != d else nn.Identity()

    def forward(self, tokens: Tensor, run: Callable[..., Tensor] | None = None) -> Tensor:
        kv = self.proj(tokens)                                   # (B, N, w)
        q = self.queries.expand(tokens.shape[0], -1, -1)         # (B, m, w)
        for layer in self.layers:
            q = run(layer, q, kv) if run else layer(q, kv)
        return self.out(q)                                       # (B, m, d)


@FUSION_MODULES.decorator("resampler", "Perceiver-style: m learnable queries per expert cross-attend "
                                       "to its tokens")
class ResamplerFusion(FusionModule):
    """E groups of `queries` tokens; nothing is shared between experts."""

    def __init__(self, params: Resampler, widths: Sequence[int], d_model: int,
                 projector: Projector) -> None:
        super().__init__(params, widths, d_model, projector)
        self.grid = query_grid(params.queries)
        self.experts = nn.ModuleList(ExpertResampler(w, d_model, params, name)
                                     for name, w in zip(self.projectors, self.widths, strict=True))

    def fuse(self, feats: Sequence[Features]) -> VisualTokens:
        return VisualTokens(tuple(Features(expert(f.tokens, self.block), self.grid)
                                  for expert, f in zip(self.experts, feats, strict=True)))
