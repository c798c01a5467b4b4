"""Cross-attention (Mini-Gemini "patch info mining"): primary tokens mine co-located secondary windows.

REFERENCE.md: queries from the primary tokens X (grid h x w); each secondary map is resized
(bilinear) to (M*h, M*w), M = max(1, round(secondary side / primary side)), so query (r, c)
owns the M x M window under it. `Q = Linear(LN(X))`, `K, V = Linear(LN(HR))`, softmax over the
window's keys (all secondaries' windows joined), `T = X + out(A V)`, then the shared projector.
"""

from __future__ import annotations

from collections.abc import Sequence

from search_space import CrossAttention
from trials.vlm.fusion.attention import MultiHead, windows
from trials.vlm.fusion.base import FUSION_MODULES, FusionModule, VisualTokens
from trials.vlm.projectors import make_projector
from trials.vlm.reduce import Features


@FUSION_MODULES.decorator("cross_attention", "Mini-Gemini patch info mining: primary tokens query "
                                             "co-located secondary windows")
class CrossAttentionFusion(FusionModule):
    """One group on the primary grid; the primary is feats[0], every other expert a secondary."""

    def __init__(self, params: CrossAttention, widths: Sequence[int], d_model: int,
                 projector: str) -> None:
        super().__init__(params, widths, d_model, projector)
        primary, *secondaries = self.widths
        self.attn = MultiHead(primary, secondaries, primary, params.heads, norm=True)
        self.proj = make_projector(projector, primary, d_model)

    def fuse(self, feats: Sequence[Features]) -> VisualTokens:
        x = feats[0]
        hr = [windows(f, x.grid) for f in feats[1:]]                     # each (B, N, M_k^2, C_k)
        mined = self.attn(x.tokens.unsqueeze(2), hr).squeeze(2)          # (B, N, C)
        return VisualTokens((Features(self.proj(x.tokens + mined), x.grid),))  # (B, N, d)
