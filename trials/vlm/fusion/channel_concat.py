"""Channel concat (EAGLE's winner; COMM; Prismatic's DINOv2 + SigLIP).

REFERENCE.md: every expert is resized (bilinear, `align_corners=True`) to one common grid —
`params.grid` x `params.grid`, else the expert grid with the fewest tokens — the channels are
concatenated, (B, h*w, sum C), and ONE shared projector maps them to the LM width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from search_space import FUSIONS, ChannelConcat
from trials.vlm.fusion.base import FUSION_MODULES, FusionModule, VisualTokens
from trials.vlm.projectors import make_projector
from trials.vlm.reduce import Features, resize_grid


@FUSION_MODULES.decorator("channel_concat", "resize every expert to one grid, concat channels, "
                                            "one shared projector")
class ChannelConcatFusion(FusionModule):
    """One group on the common grid; the projector sees sum(widths) channels."""

    def __init__(self, params: ChannelConcat, widths: Sequence[int], d_model: int,
                 projector: str) -> None:
        super().__init__(params, widths, d_model, projector)
        self.proj = make_projector(projector, sum(self.widths), d_model)

    def fuse(self, feats: Sequence[Features]) -> VisualTokens:
        # The common grid is the cost model's own rule, so the two cannot drift apart.
        (grid,) = FUSIONS.get("channel_concat").groups(self.params, [f.grid for f in feats])
        parts = [resize_grid(f.tokens, f.grid, grid) for f in feats]  # each (B, h*w, C_e)
        fused = torch.cat(parts, dim=-1)                                # (B, h*w, sum C_e)
        return VisualTokens((Features(self.proj(fused), grid),))       # (B, h*w, d)
