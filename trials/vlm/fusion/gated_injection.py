"""Gated injection: LLaVA-HR's adapter maths once, after the frozen, cached experts (a late
fusion; `mr_adapter` until the faithful operator inside the ViT took that name: mr_adapter.py).

REFERENCE.md: F_h resized (bilinear) to the primary grid, `s = Conv1x1(GELU(Conv1x1(F_h)))`,
`f = F_l + Conv1x1(GELU(DWConv7x7(F_l)))`, `g = tanh(MLP([mean_tokens(f); mean_tokens(s)]))`
(one scalar per image, MLP 2C -> C/2 -> 1), output `f + g * s`. The two output Conv1x1 are
zero-initialised, so the adapter starts as the identity. One adapter per secondary, in order;
then the shared projector. A Conv1x1 on tokens is a Linear.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space import GatedInjection, Grid
from trials.vlm.fusion.base import FUSION_MODULES, FusionModule, VisualTokens
from trials.vlm.projectors import make_projector
from trials.vlm.reduce import Features, resize_grid


class Injection(nn.Module):
    """One adapter: the primary (width C) gets a gated injection of one secondary (width C_h)."""

    def __init__(self, width: int, secondary: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(width, width, 7, padding=3, groups=width)  # DWConv7x7
        self.dw_out = nn.Linear(width, width)
        self.s_in = nn.Linear(secondary, width)
        self.s_out = nn.Linear(width, width)
        hidden = max(1, width // 2)
        self.gate = nn.Sequential(nn.Linear(2 * width, hidden), nn.GELU(), nn.Linear(hidden, 1))
        for out in (self.dw_out, self.s_out):  # identity at start
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)

    def forward(self, fl: Tensor, fh: Tensor, grid: Grid) -> Tensor:
        """fl (B, N, C) on `grid`, fh (B, N, C_h) already on `grid` -> (B, N, C)."""
        b, _, c = fl.shape
        fmap = fl.transpose(1, 2).reshape(b, c, *grid)                   # (B, C, h, w)
        local = self.dw(fmap).flatten(2).transpose(1, 2)                  # (B, N, C)
        f = fl + self.dw_out(F.gelu(local))                               # (B, N, C)
        s = self.s_out(F.gelu(self.s_in(fh)))                             # (B, N, C)
        g = torch.tanh(self.gate(torch.cat([f.mean(1), s.mean(1)], -1)))  # (B, 1)
        return f + g.unsqueeze(1) * s                                     # (B, N, C)


@FUSION_MODULES.decorator("gated_injection", "late gated injection of secondary experts into the "
                                             "primary's output tokens")
class GatedInjectionFusion(FusionModule):
    """One group on the primary grid; the primary is feats[0], one adapter per secondary."""

    def __init__(self, params: GatedInjection, widths: Sequence[int], d_model: int,
                 projector: str) -> None:
        super().__init__(params, widths, d_model, projector)
        primary, *secondaries = self.widths
        self.adapters = nn.ModuleList(Injection(primary, w) for w in secondaries)
        self.proj = make_projector(projector, primary, d_model)

    def fuse(self, feats: Sequence[Features]) -> VisualTokens:
        primary = feats[0]
        x = primary.tokens  # (B, N, C)
        for adapter, f in zip(self.adapters, feats[1:], strict=True):
            x = adapter(x, resize_grid(f.tokens, f.grid, primary.grid), primary.grid)
        return VisualTokens((Features(self.proj(x), primary.grid),))  # (B, N, d)
