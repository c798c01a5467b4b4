"""SVA (Cambrian-1 Spatial Vision Aggregator): a G x G query grid attends to local windows.

REFERENCE.md: G = sqrt(queries) learnable queries of the LM width; expert k's map is resized
(bilinear) to (m_k*G, m_k*G), m_k = max(1, round(side_k / G)), and query (i, j) attends only
to its m_k x m_k window in every expert (the experts' keys joined), with per-expert K/V
projections. A global context (mean of the first expert's tokens, projected) is added to every
query; then `depth` layers of `q = q + MHA(q, K, V); q = q + MLP(LN(q))`. One G x G group.
The `projector` maps each expert's (resized) tokens to the LM width before K/V, one per expert
(the experts' widths differ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from search_space import SVA
from trials.vlm.fusion.attention import MultiHead, windows
from trials.vlm.fusion.base import FUSION_MODULES, FusionModule, VisualTokens
from trials.vlm.projectors import make_projector
from trials.vlm.reduce import Features


class AggregatorLayer(nn.Module):
    """`q = q + MHA(q, K, V); q = q + MLP(LN(q))`, K/V from every expert's window of each query."""

    def __init__(self, d: int, experts: int, heads: int) -> None:
        super().__init__()
        self.attn = MultiHead(d, [d] * experts, d, heads)
        self.mlp_norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, q: Tensor, kv: Sequence[Tensor]) -> Tensor:
        q = q + self.attn(q, kv)               # (B, G*G, 1, d), keys (B, G*G, m_k^2, d) per expert
        return q + self.mlp(self.mlp_norm(q))  # (B, G*G, 1, d)


@FUSION_MODULES.decorator("sva", "Cambrian-1 Spatial Vision Aggregator: a G x G query grid attends "
                                 "to local windows")
class SVAFusion(FusionModule):
    """One G x G group; query (i, j) sees only its own window of every expert."""

    def __init__(self, params: SVA, widths: Sequence[int], d_model: int, projector: str) -> None:
        super().__init__(params, widths, d_model, projector)
        side = math.isqrt(params.queries)
        self.grid = (side, side)
        self.projs = nn.ModuleList(make_projector(projector, w, d_model) for w in self.widths)
        self.queries = nn.Parameter(torch.randn(side * side, d_model) * 0.02)  # (G*G, d)
        self.context = nn.Linear(self.widths[0], d_model)
        self.layers = nn.ModuleList(AggregatorLayer(d_model, len(self.widths), params.heads)
                                    for _ in range(params.depth))

    def fuse(self, feats: Sequence[Features]) -> VisualTokens:
        kv = [proj(windows(f, self.grid)) for proj, f in zip(self.projs, feats, strict=True)]
        context = self.context(feats[0].tokens.mean(1))            # (B, d)
        q = (self.queries + context[:, None]).unsqueeze(2)         # (B, G*G, 1, d)
        for layer in self.layers:
            q = self.block(layer, q, kv)
        return VisualTokens((Features(q.squeeze(2), self.grid),))  # (B, G*G, d)
