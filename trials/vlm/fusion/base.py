"""What every fusion operator takes and gives, and the registry of operators by YAML `kind`.

An operator turns the experts' reduced features (primary expert first) into the visual token
groups the LM receives, already projected to the LM width `d_model`. Its output grids equal
`search_space.fusions.FUSIONS.get(kind).groups(params, input grids)`, so the model's
`visual_tokens` / `positions_used` equal the analytic cost model.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from search_space import FUSIONS, FusionParams, Grid, Registry, per_expert
from trials.vlm.reduce import Features

Projector = str | Sequence[str]  # one projector name, or one per expert (primary first)

if TYPE_CHECKING:
    from trials.vlm.experts import ExpertTokens


@dataclass(frozen=True)
class VisualTokens:
    """Visual token groups in LM order: each (B, h*w, d_model) on its grid (h, w)."""

    groups: tuple[Features, ...]

    @property
    def tokens(self) -> Tensor:
        return torch.cat([g.tokens for g in self.groups], dim=1)  # (B, N, d)

    @property
    def grids(self) -> list[Grid]:
        return [g.grid for g in self.groups]


class FusionModule(nn.Module, abc.ABC):
    """Base of the operators: `forward(feats) -> VisualTokens`, feats primary first.

    Checks the number of experts, then calls the operator's own `fuse`. An operator whose
    weights depend on its inputs' grids (sva: per-window position embeddings) sets `needs_grids`
    and takes them as `grids=` (the experts' grids entering the fusion, primary first). An
    operator that works inside the primary expert (`live_primary`) also gives `primary_layers`:
    the VLM runs the primary through it (never from the cache) and passes the result to
    `forward` as feats[0].
    """

    needs_grids: ClassVar[bool] = False
    live_primary: ClassVar[bool] = False

    def __init__(self, params: FusionParams, widths: Sequence[int], d_model: int,
                 projector: Projector) -> None:
        super().__init__()
        kind = FUSIONS.get(params.kind)
        if len(widths) < kind.min_experts:
            raise ValueError(f"{params.kind} needs at least {kind.min_experts} experts, got {len(widths)}")
        self.params = params
        self.widths = tuple(widths)   # channels of each expert's features, primary first
        self.d_model = d_model        # LM hidden size
        # names in trials.vlm.projectors.PROJECTOR_MODULES: one per expert (primary first), and
        # `projector` the one an operator with a single shared projector uses
        self.projectors = per_expert(projector, len(self.widths))
        if len(set(self.projectors)) > 1 and not kind.per_expert_projector:
            raise ValueError(f"{params.kind} has one shared projector; got one per expert "
                             f"({', '.join(self.projectors)})")
        self.projector = self.projectors[0]
        self.checkpointing = False    # recompute `block`s in backward instead of keeping them

    def forward(self, feats: Sequence[Features]) -> VisualTokens:
        if len(feats) != len(self.widths):
            raise ValueError(f"{self.params.kind} was built for {len(self.widths)} experts, "
                             f"got {len(feats)}")
        return self.fuse(feats)

    def block(self, layer: nn.Module, *args: Tensor | Sequence[Tensor]) -> Tensor:
        """`layer(*args)`, checkpointed when `checkpointing` is on and gradients are taken."""
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def primary_layers(self, primary: ExpertTokens, images: Tensor,
                       secondaries: Sequence[Features]) -> list[Features]:
        """The primary's selected layers for uint8 `images`, run with this operator inside it,
        given the secondaries' merged features (operators with `live_primary` only)."""
        raise TypeError(f"{self.params.kind} works on the experts' outputs; it does not run inside one")

    @abc.abstractmethod
    def fuse(self, feats: Sequence[Features]) -> VisualTokens:
        """Fuse the experts' features (primary first) into projected visual token groups."""


FUSION_MODULES: Registry[type[FusionModule]] = Registry("fusion")


def build_fusion(params: FusionParams, widths: Sequence[int], d_model: int, projector: Projector,
                 grids: Sequence[Grid] | None = None, primary_depth: int | None = None) -> FusionModule:
    """The operator `params.kind`. `projector`: one name, or one per expert (primary first), given
    to an operator with one shared projector as that one name. `grids` (primary first) reach only
    an operator that needs them; `primary_depth` (the primary expert's number of blocks) only
    one that runs inside the primary."""
    names = per_expert(projector, len(widths))
    if not FUSIONS.get(params.kind).per_expert_projector and len(set(names)) == 1:
        projector = names[0]
    module = FUSION_MODULES.get(params.kind)
    extra: dict[str, object] = {}
    if module.needs_grids:
        if grids is None:
            raise ValueError(f"{params.kind} is built for its experts' grids: pass grids=[(h, w), ...]")
        extra["grids"] = grids
    if module.live_primary:
        if primary_depth is None:
            raise ValueError(f"{params.kind} runs inside the primary expert: give primary_depth")
        extra["primary_depth"] = primary_depth
    return module(params, widths, d_model, projector, **extra)
