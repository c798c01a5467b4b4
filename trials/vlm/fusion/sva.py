"""SVA (Cambrian-1 Spatial Vision Aggregator), as Cambrian builds it.

Read from `cambrian-mllm/cambrian` at 539ffc3 (cambrian/model/vision_sampler.py:
VisionCrossAttentionLayer, MultiKVCrossAttention, MLP, VisionTokenSampler; cambrian/model/
cambrian_arch.py: `mm_projector_aux_*`, `vision_query`, the global context, the windows cut by
`rearrange_vision_tower_features_*`, `mm_projector`, `image_newline`); tests/trials/vlm/
test_sva_parity.py checks this module against a forward written from those files.

- Each expert k: `mm_projector_aux_k` = Linear(C_k -> W), GELU, Linear(W -> W), LayerNorm(W),
  on its own grid (W = `width`, Cambrian's `vision_hidden_size`). The global context is the mean
  of the first expert's projected tokens.
- Expert k's projected map, on a side of m_k * G (m_k = max(1, round(side_k / G)); Cambrian needs
  side_k = m_k * G exactly, vlmsearch resizes bilinearly otherwise), is cut into the G x G cells'
  m_k x m_k windows, row-major within a window (Cambrian's view/permute).
- One learnable query (`vision_query`, W) expanded over the G x G cells, then `depth` layers:
  `x = proj_in([q, proj_context(ctx)])`; `x = x + attn(x, windows + pos_embed_k)`; `q = q +
  proj_out(norm(x))`, where attn has LN + Linear (no bias) for Q and for every expert's K and V,
  softmax over all the experts' window keys together, Linear (no bias) out; `pos_embed_k`
  (m_k^2, W) is learnable, per layer, only where m_k > 1; proj_out is Linear-GELU-Linear without
  biases. The context enters every layer.
- The YAML `projector` from W to the LM (Cambrian's `mm_projector`, mlp2x_gelu), then with
  `newline` one learnable `image_newline` (d) after every row: one G x (G + 1) group.

`heads` is Cambrian's fixed 16 made a parameter; the attention's inner width is W rounded up to a
multiple of `heads` (Cambrian needs W divisible by it; then the two agree). Not built: Cambrian's
several query groups (Cambrian-1 uses one, 576 queries), its attention masks of padded images,
and the further SVA layers it inserts inside the LLM (`vision_sampler_layers`, 10 at 8B).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space import SVA, Grid
from trials.vlm.fusion.attention import window_side
from trials.vlm.fusion.base import FUSION_MODULES, FusionModule, VisualTokens
from trials.vlm.projectors import make_projector
from trials.vlm.reduce import Features, resize_grid


def expert_projector(width: int, hidden: int) -> nn.Sequential:
    """Cambrian's `mm_projector_aux_k`: Linear(C -> W), GELU, Linear(W -> W), LayerNorm(W)."""
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.LayerNorm(hidden))


def cut_windows(tokens: Tensor, grid: Grid, side: int, m: int) -> Tensor:
    """(B, h*w, W) -> (B, G*G, m*m, W): resized to (m*G, m*G), each cell's window row-major."""
    fine = resize_grid(tokens, grid, (m * side, m * side))                      # (B, (mG)^2, W)
    x = fine.unflatten(1, (side, m, side, m)).permute(0, 1, 3, 2, 4, 5)         # (B, G, G, m, m, W)
    return x.flatten(3, 4).flatten(1, 2)                                        # (B, G*G, m*m, W)


def norm_linear(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(i), nn.Linear(i, o, bias=False))


class MultiKVAttention(nn.Module):
    """Cambrian's MultiKVCrossAttention: LN + Linear (no bias) for Q and each source's K and V,
    one softmax over every source's keys, Linear (no bias) out. Its parameter names are
    Cambrian's (`q_proj`, `k_proj_{i}`, `v_proj_{i}`, `o_proj`), so its state dict loads as is."""

    def __init__(self, dim: int, sources: int, heads: int) -> None:
        super().__init__()
        self.heads, self.sources = heads, sources
        inner = heads * math.ceil(dim / heads)
        self.q_proj = norm_linear(dim, inner)
        for i in range(sources):
            setattr(self, f"k_proj_{i}", norm_linear(dim, inner))
            setattr(self, f"v_proj_{i}", norm_linear(dim, inner))
        self.o_proj = nn.Linear(inner, dim, bias=False)

    def split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)  # (..., n, D) -> (..., H, n, D/H)

    def forward(self, q: Tensor, kv: Sequence[Tensor]) -> Tensor:
        """q (B, G*G, 1, W), kv[i] (B, G*G, m_i^2, W) -> (B, G*G, 1, W)."""
        k = torch.cat([getattr(self, f"k_proj_{i}")(s) for i, s in enumerate(kv)], dim=-2)  # (B, GG, L, D)
        v = torch.cat([getattr(self, f"v_proj_{i}")(s) for i, s in enumerate(kv)], dim=-2)  # (B, GG, L, D)
        a = F.scaled_dot_product_attention(self.split(self.q_proj(q)), self.split(k), self.split(v))
        return self.o_proj(a.transpose(-3, -2).flatten(-2))  # (B, GG, H, 1, D/H) -> (B, GG, 1, W)


class MLP(nn.Module):
    """Cambrian's MLP: Linear-GELU-Linear without biases (`linear_1`, `act`, `linear_2`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(dim, dim, bias=False)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class SVALayer(nn.Module):
    """Cambrian's VisionCrossAttentionLayer at width W (queries, context and keys all W wide),
    with its parameter names: its state dict is that layer's."""

    def __init__(self, dim: int, windows: Sequence[int], heads: int) -> None:
        super().__init__()
        self.windows = tuple(windows)
        self.proj_context = nn.Linear(dim, dim, bias=False)
        self.proj_in = nn.Linear(2 * dim, dim, bias=False)
        self.proj_out = MLP(dim)
        self.norm = nn.LayerNorm(dim)
        self.cross_attn = MultiKVAttention(dim, len(windows), heads)
        for i, m in enumerate(windows):
            if m > 1:  # learnable key positions inside a window
                setattr(self, f"pos_embed_{i}", nn.Parameter(torch.randn(m * m, dim)))  # (m_i^2, W)

    def forward(self, q: Tensor, context: Tensor, *kv: Tensor) -> Tensor:
        """q (B, G*G, 1, W), context (B, 1, 1, W), kv[i] (B, G*G, m_i^2, W) -> (B, G*G, 1, W)."""
        ctx = self.proj_context(context).expand(-1, q.shape[1], -1, -1)            # (B, GG, 1, W)
        x = self.proj_in(torch.cat([q, ctx], dim=-1))                               # (B, GG, 1, W)
        keys = [s + getattr(self, f"pos_embed_{i}").to(s.dtype) if m > 1 else s
                for i, (s, m) in enumerate(zip(kv, self.windows, strict=True))]    # + (m_i^2, W)
        x = x + self.cross_attn(x, keys)
        return q + self.proj_out(self.norm(x))


@FUSION_MODULES.decorator("sva", "Cambrian-1 Spatial Vision Aggregator: a G x G query grid attends "
                                 "to local windows")
class SVAFusion(FusionModule):
    """One G x G group (G x (G + 1) with `newline`); cell (i, j) sees only its own window of every
    expert, and every cell the global context."""

    needs_grids = True

    def __init__(self, params: SVA, widths: Sequence[int], d_model: int, projector: str,
                 grids: Sequence[Grid]) -> None:
        super().__init__(params, widths, d_model, projector)
        if len(grids) != len(self.widths):
            raise ValueError(f"sva got {len(grids)} grids for {len(self.widths)} experts")
        self.side, w = math.isqrt(params.queries), params.width
        self.in_grids = tuple((int(h), int(v)) for h, v in grids)
        self.windows = tuple(window_side(g, (self.side, self.side)) for g in self.in_grids)
        # Cambrian's names: mm_projector_aux.{k} is its mm_projector_aux_{k}, layers its
        # vision_sampler_0.layers; the inits are its initialize_vision_modules'
        self.mm_projector_aux = nn.ModuleList(expert_projector(c, w) for c in self.widths)
        self.vision_query = nn.Parameter(torch.randn(1, w) / math.sqrt(w))         # (1 group, W)
        self.layers = nn.ModuleList(SVALayer(w, self.windows, params.heads) for _ in range(params.depth))
        self.mm_projector = make_projector(projector, w, d_model)                  # W -> d
        self.image_newline = (nn.Parameter(torch.randn(d_model) / math.sqrt(d_model))
                              if params.newline else None)                         # (d,)

    def fuse(self, feats: Sequence[Features]) -> VisualTokens:
        grids = tuple(tuple(f.grid) for f in feats)
        if grids != self.in_grids:
            raise ValueError(f"sva was built for expert grids {list(self.in_grids)} (its per-window "
                             f"position embeddings), got {list(grids)}")
        projected = [aux(f.tokens)                                                 # (B, N_k, W)
                     for aux, f in zip(self.mm_projector_aux, feats, strict=True)]
        context = projected[0].mean(1)[:, None, None]                              # (B, 1, 1, W)
        kv = [cut_windows(p, f.grid, self.side, m)
              for p, f, m in zip(projected, feats, self.windows, strict=True)]     # (B, GG, m_k^2, W)
        b, cells = context.shape[0], self.side * self.side
        q = self.vision_query.expand(b, cells, 1, -1)                              # (B, GG, 1, W)
        for layer in self.layers:
            q = self.block(layer, q, context, *kv)
        out = self.mm_projector(q.squeeze(2))                                      # (B, GG, d)
        grid = (self.side, self.side)
        if self.image_newline is not None:
            rows = out.unflatten(1, grid)                                          # (B, G, G, d)
            ends = self.image_newline.expand(b, self.side, 1, -1).to(rows.dtype)   # (B, G, 1, d)
            out, grid = torch.cat([rows, ends], dim=2).flatten(1, 2), (self.side, self.side + 1)
        return VisualTokens((Features(out, grid),))                                # (B, G*(G+1), d)
