"""Cross-attention (Mini-Gemini "patch info mining"): primary tokens mine co-located secondary windows.

As dvlab-research/MGM builds it (mgm/model/mgm_arch.py, `unified_resampler`,
`vlm_uni_{query,aux,val}_projector`, `encode_images`; commit 769820cb71afc7c2b9a2166ca3ce92db1636215c):
queries from the primary tokens X (grid h x w, width C); the secondary's map is cut into the
M x M window under each query (M = secondary side / primary side); `Q = Linear(LN(X))`,
`K = Linear(LN(HR))`, `V = Linear(LN(HR))`, all to C; scores `Q K^T / sqrt(C)`, `nan_to_num`,
softmax over the window's M*M keys; `T = X + A V` (no output projection), then the projector.

vlmsearch's generalisations (MGM: one secondary, one head, an exact multiple):
- several secondaries: each has its own K/V projections and their windows' keys are joined in
  one softmax;
- `heads: H > 1`: the C channels of Q, K and V split into H contiguous heads (sizes differ by at
  most one when H does not divide C), each scaled by 1/sqrt(its width), the heads' outputs
  concatenated back to C (still no output projection); H = 1 is MGM;
- a secondary grid that is not M times the primary's (MGM's reshape fails there) is first
  resized bilinearly (`align_corners=True`) to (M*h, M*w), M = max(1, round(side ratio))
  (`attention.windows`); the cost model uses the same M.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from search_space import CrossAttention
from trials.vlm.fusion.attention import windows
from trials.vlm.fusion.base import FUSION_MODULES, FusionModule, VisualTokens
from trials.vlm.projectors import make_projector
from trials.vlm.reduce import Features


def ln_linear(in_dim: int, out_dim: int) -> nn.Sequential:
    """MGM's `nn.Sequential(nn.LayerNorm(in), nn.Linear(in, out))` (children 0 and 1)."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))


def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """One head of MGM's window attention: q (B, N, c), k and v (B, N, L, c) -> (B, N, c)."""
    scores = q.unsqueeze(2) @ (k.transpose(-1, -2) / k.shape[-1] ** 0.5)  # (B, N, 1, L)
    return (scores.nan_to_num().softmax(-1) @ v).squeeze(2)  # MGM: .mean(2) over the one query


def join(parts: list[Tensor]) -> Tensor:
    """The secondaries' windows side by side: each (B, N, M_k^2, C) -> (B, N, L, C)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


@FUSION_MODULES.decorator("cross_attention", "Mini-Gemini patch info mining: primary tokens query "
                                             "co-located secondary windows")
class CrossAttentionFusion(FusionModule):
    """One group on the primary grid; the primary is feats[0], every other expert a secondary."""

    def __init__(self, params: CrossAttention, widths: Sequence[int], d_model: int,
                 projector: str) -> None:
        super().__init__(params, widths, d_model, projector)
        primary, *secondaries = self.widths
        if params.heads > primary:
            raise ValueError(f"cross_attention heads {params.heads} exceed the primary expert's "
                             f"width {primary} (each head takes some of its channels); use at most "
                             f"{primary} heads")
        self.heads = params.heads
        self.query = ln_linear(primary, primary)                            # MGM vlm_uni_query_projector
        self.keys = nn.ModuleList(ln_linear(c, primary) for c in secondaries)    # vlm_uni_aux_projector
        self.values = nn.ModuleList(ln_linear(c, primary) for c in secondaries)  # vlm_uni_val_projector
        self.proj = make_projector(projector, primary, d_model)             # MGM mm_projector

    def fuse(self, feats: Sequence[Features]) -> VisualTokens:
        x = feats[0]
        hr = [windows(f, x.grid) for f in feats[1:]]                     # each (B, N, M_k^2, C_k)
        q = self.query(x.tokens)                                          # (B, N, C)
        k = join([p(s) for p, s in zip(self.keys, hr, strict=True)])     # (B, N, L, C), L = sum M_k^2
        v = join([p(s) for p, s in zip(self.values, hr, strict=True)])   # (B, N, L, C)
        heads = zip(*(t.tensor_split(self.heads, dim=-1) for t in (q, k, v)), strict=True)
        mined = torch.cat([attend(*head) for head in heads], dim=-1)     # (B, N, C)
        return VisualTokens((Features(self.proj(x.tokens + mined), x.grid),))  # (B, N, d)
