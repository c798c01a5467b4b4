"""Sequence concat (MouSi; LEO): a projector per expert, tokens joined along the sequence.

REFERENCE.md: `sum N_e` tokens, one group per expert in order; each expert's projector may
differ (`projector` a mapping; COMM: a 2-layer MLP for DINOv2, a linear one for CLIP).
`expert_embedding: true` adds a learned type embedding per expert. `interleave: true` (LEO;
equal grids only) alternates co-located tokens: ONE group of grid (h, w*E) in row-major order
(r, c, e), i.e. token (r, c) of expert e sits at column c*E + e.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from search_space import FUSIONS, SequenceConcat
from trials.vlm.fusion.base import FUSION_MODULES, FusionModule, Projector, VisualTokens
from trials.vlm.projectors import make_projector
from trials.vlm.reduce import Features


@FUSION_MODULES.decorator("sequence_concat", "project each expert separately and join along the "
                                             "sequence (optionally interleaved)")
class SequenceConcatFusion(FusionModule):
    """E groups (or one interleaved group); every expert has its own projector."""

    params: SequenceConcat
    type_embedding: nn.Parameter | None

    def __init__(self, params: SequenceConcat, widths: Sequence[int], d_model: int,
                 projector: Projector) -> None:
        super().__init__(params, widths, d_model, projector)
        self.projs = nn.ModuleList(make_projector(name, w, d_model)
                                   for name, w in zip(self.projectors, self.widths, strict=True))
        self.type_embedding = None
        if params.expert_embedding:  # BERT-style token-type init, one row per expert
            self.type_embedding = nn.Parameter(torch.randn(len(self.widths), d_model) * 0.02)

    def fuse(self, feats: Sequence[Features]) -> VisualTokens:
        # The cost model's rule gives the groups and raises InvalidDesign for unequal interleaved grids.
        grids = FUSIONS.get("sequence_concat").groups(self.params, [f.grid for f in feats])
        tokens = [proj(f.tokens) for proj, f in zip(self.projs, feats, strict=True)]  # each (B, N_e, d)
        if self.type_embedding is not None:
            tokens = [t + e for t, e in zip(tokens, self.type_embedding, strict=True)]
        if self.params.interleave and len(tokens) > 1:
            mixed = torch.stack(tokens, dim=2)  # (B, h*w, E, d): cell (r, c), then expert e
            return VisualTokens((Features(mixed.flatten(1, 2), grids[0]),))  # (B, h*w*E, d)
        return VisualTokens(tuple(Features(t, f.grid) for t, f in zip(tokens, feats, strict=True)))
