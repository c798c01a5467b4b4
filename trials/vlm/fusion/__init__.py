"""Fusion operators by YAML `kind`; importing this package registers every one of them.

REFERENCE.md, "Fusion operators". `build_fusion(params, widths, d_model, projector)` gives the
operator for a design point; its output grids equal `search_space.fusions.FUSIONS` groups.
"""

from __future__ import annotations

from trials.vlm.fusion import (  # noqa: F401  (imported to register the operators)
    channel_concat,
    cross_attention,
    gated_injection,
    mr_adapter,
    resampler,
    sequence_concat,
    sva,
)
from trials.vlm.fusion.base import FUSION_MODULES, FusionModule, VisualTokens, build_fusion

__all__ = ["FUSION_MODULES", "FusionModule", "VisualTokens", "build_fusion"]
