"""MR-Adapter (LLaVA-HR, `luogen1996/LLaVA-HR` llava_hr/model/multimodal_encoder/
multipath_encoder_wapper.py at 1212ffbb): adapters INSIDE the primary (low-res) ViT.

After blocks `at` (default n/4, n/2, 3n/4) one `Stitch` per secondary (`S2FStitchAlignModuleV2`):
the secondary map is convolved at its own resolution, `s = Conv1x1(GELU(Conv1x1(F_h)))`, then
aligned to the ViT grid (avg-pooled by the integer ratio when larger, bilinear with
align_corners=True when smaller); `f = F_l + Conv1x1(GELU(DWConv7x7(F_l)))`;
`g = MLP(mean_tokens([f; s]))` (2C -> C/2 -> 1); out `f + tanh(g) * s`. The Conv1x1 are Linear on
tokens; the two output ones are zero-initialised (the adapter starts as the identity). After the
ViT, `MultiPathAlignModule`: `Linear(F_l) + Linear(align(F_h))`, then the shared projector.

The primary runs live (never cached) through `primary_layers`, its frozen later blocks passing
gradients to the adapters; the secondaries are frozen features (cacheable). Differences from the
official code: the HF ViT keeps its class token (LLaVA-HR drops it before the blocks) and the
adapters change the patch tokens only; the primary's `layers` are read (LLaVA-HR: the last block).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space import Grid, MRAdapter
from trials.vlm.experts import ExpertTokens
from trials.vlm.fusion.base import FUSION_MODULES, FusionModule, VisualTokens
from trials.vlm.projectors import make_projector
from trials.vlm.reduce import Features


def align(x: Tensor, src: Grid, dst: Grid) -> Tensor:
    """`src2dst_align`: tokens (B, hs*ws, C) on `src` -> (B, h*w, C) on `dst`."""
    if src == dst:
        return x
    b, _, c = x.shape
    fmap = x.transpose(1, 2).reshape(b, c, *src)                         # (B, C, hs, ws)
    if src[0] * src[1] > dst[0] * dst[1]:
        if src[0] % dst[0] or src[1] % dst[1]:
            raise ValueError(f"mr_adapter pools a {src[0]}x{src[1]} secondary to the primary's "
                             f"{dst[0]}x{dst[1]} grid by an integer ratio; give the secondary a "
                             "multiple of the primary's grid (`tokens` or `image_size`)")
        kernel = (src[0] // dst[0], src[1] // dst[1])
        fmap = F.avg_pool2d(fmap, kernel, kernel)
    else:
        fmap = F.interpolate(fmap.float(), size=dst, mode="bilinear", align_corners=True).to(x.dtype)
    return fmap.flatten(2).transpose(1, 2)                                # (B, h*w, C)


class Stitch(nn.Module):
    """`S2FStitchAlignModuleV2`: one secondary (width C_h) into the ViT's tokens (width C)."""

    def __init__(self, width: int, secondary: int) -> None:
        super().__init__()
        self.slow_conv = nn.Linear(secondary, secondary)                   # Conv1x1 at the secondary's grid
        self.slow_proj = nn.Linear(secondary, width)                       # Conv1x1, zero-init
        self.fast_conv = nn.Conv2d(width, width, 7, padding=3, groups=width)  # DWConv7x7
        self.fast_proj = nn.Linear(width, width)                           # Conv1x1, zero-init
        self.gate = nn.Sequential(nn.Linear(2 * width, width // 2), nn.GELU(), nn.Linear(width // 2, 1))
        nn.init.xavier_uniform_(self.slow_conv.weight)
        nn.init.xavier_uniform_(self.fast_conv.weight)
        for layer in (self.slow_conv, self.fast_conv, self.slow_proj, self.fast_proj):
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.slow_proj.weight)
        nn.init.zeros_(self.fast_proj.weight)

    def forward(self, fast: Tensor, grid: Grid, slow: Features) -> Tensor:
        """fast (B, N, C) on `grid`; slow (B, N_h, C_h) on its own grid -> (B, N, C)."""
        b, _, c = fast.shape
        s = align(self.slow_proj(F.gelu(self.slow_conv(slow.tokens))), slow.grid, grid)  # (B, N, C)
        fmap = fast.transpose(1, 2).reshape(b, c, *grid)                   # (B, C, h, w)
        local = F.gelu(self.fast_conv(fmap)).flatten(2).transpose(1, 2)    # (B, N, C)
        f = fast + self.fast_proj(local)                                   # (B, N, C)
        g = self.gate(torch.cat([f.mean(1), s.mean(1)], dim=-1))           # (B, 1)
        return f + s * torch.tanh(g).unsqueeze(1)                          # (B, N, C)


class Combine(nn.Module):
    """`MultiPathAlignModule` after the ViT: Linear(primary) + sum of Linear(aligned secondary)."""

    def __init__(self, width: int, secondaries: Sequence[int]) -> None:
        super().__init__()
        self.fast_proj = nn.Linear(width, width)
        self.slow_proj = nn.ModuleList(nn.Linear(w, width) for w in secondaries)

    def forward(self, fast: Features, slows: Sequence[Features]) -> Tensor:
        out = self.fast_proj(fast.tokens)                                  # (B, N, C)
        for proj, slow in zip(self.slow_proj, slows, strict=True):
            out = out + proj(align(slow.tokens, slow.grid, fast.grid))
        return out


@FUSION_MODULES.decorator("mr_adapter", "LLaVA-HR: adapters inside the primary ViT inject the "
                                        "secondary experts")
class MRAdapterFusion(FusionModule):
    """The primary is feats[0] (already through the adapters, see `primary_layers`)."""

    live_primary: ClassVar[bool] = True

    def __init__(self, params: MRAdapter, widths: Sequence[int], d_model: int, projector: str,
                 primary_depth: int) -> None:
        super().__init__(params, widths, d_model, projector)
        primary, *secondaries = self.widths
        self.positions = params.positions(primary_depth)  # blocks an adapter follows
        self.adapters = nn.ModuleList(nn.ModuleList(Stitch(primary, w) for w in secondaries)
                                      for _ in self.positions)
        self.combine = Combine(primary, secondaries)
        self.proj = make_projector(projector, primary, d_model)

    def adapt(self, index: int, x: Tensor, grid: Grid, secondaries: Sequence[Features]) -> Tensor:
        """The adapters at position `index`: ViT tokens (B, N, C) on `grid` -> (B, N, C)."""
        for stitch, slow in zip(self.adapters[index], secondaries, strict=True):
            x = stitch(x, grid, slow)
        return x

    def primary_layers(self, primary: ExpertTokens, images: Tensor,
                       secondaries: Sequence[Features]) -> list[Features]:
        width = primary.expert.info.width
        if width != self.widths[0]:
            raise ValueError(f"mr_adapter's adapters run at the primary ViT's width {width}, but its "
                             f"merged tokens are {self.widths[0]} wide; read one layer or merge "
                             "with mean / layerscale (not concat)")
        inject = {k: (lambda x, grid, i=i: self.adapt(i, x, grid, secondaries))
                  for i, k in enumerate(self.positions)}
        return primary.features(images, inject)

    def fuse(self, feats: Sequence[Features]) -> VisualTokens:
        primary, *secondaries = feats
        x = self.combine(primary, secondaries)                              # (B, N, C)
        return VisualTokens((Features(self.proj(x), primary.grid),))     # (B, N, d)

    def connector_only(self, feats: Sequence[Features]) -> VisualTokens:
        """The operator's own compute without the ViT: each position's adapters in turn on
        feats[0], then `fuse` (the cost model's contract tests count exactly this)."""
        x = feats[0].tokens
        for index in range(len(self.positions)):
            x = self.adapt(index, x, feats[0].grid, feats[1:])
        return self.fuse([Features(x, feats[0].grid), *feats[1:]])
