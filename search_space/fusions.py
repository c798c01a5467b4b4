"""Fusion kinds: each one's parameters (the YAML `fusion:` entry) and its token groups.

`groups(params, grids)` gives the visual token groups the LM receives, as (h, w) grids, from the
experts' grids after reduction, the primary expert first. The cost model and the position
schemes both read it (REFERENCE.md: "Fusion operators" and "Position schemes").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

from search_space.components import is_square
from search_space.errors import InvalidDesign
from search_space.numbers import PositiveInt
from search_space.registry import Registry

Grid = tuple[int, int]


def _square(n: int) -> int:
    if not is_square(n):
        below, above = math.isqrt(n) ** 2, (math.isqrt(n) + 1) ** 2
        raise ValueError(f"{n} is not a perfect square (it sets a square grid); use {below} or {above}")
    return n


SquareInt = Annotated[PositiveInt, AfterValidator(_square)]


class FusionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ChannelConcat(FusionParams):
    """Resize every expert to one grid, concatenate channels, then one shared projector."""

    kind: Literal["channel_concat"] = "channel_concat"
    grid: PositiveInt | None = None  # common grid side; null: the smallest expert grid


class SequenceConcat(FusionParams):
    """Project each expert separately and join along the sequence (MouSi, LEO)."""

    kind: Literal["sequence_concat"] = "sequence_concat"
    interleave: bool = False         # LEO: alternate co-located tokens (equal grids only)
    expert_embedding: bool = False   # a learned type embedding per expert


class GatedInjection(FusionParams):
    """Late gated injection of secondary experts into the primary's output tokens (LLaVA-HR's
    adapter maths applied once after the frozen, cached experts; `mr_adapter` before 2026-12)."""

    kind: Literal["gated_injection"] = "gated_injection"


def _increasing(at: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if at is not None and (not at or list(at) != sorted(set(at))):
        raise ValueError(f"at {list(at)}: give block positions in increasing order, each once "
                         "(e.g. [6, 12, 18]), or leave `at` out for n/4, n/2, 3n/4")
    return at


# families whose blocks an operator can sit between (trials.vlm.experts: `blocks_path`)
INSIDE_FAMILIES = frozenset({"clip", "siglip", "dinov2"})


class MRAdapter(FusionParams):
    """LLaVA-HR's MR-Adapter: adapters inside the primary ViT, after blocks `at`, inject the
    secondary (high-res) experts; the primary runs live, so its later blocks see fused features.

    `at` counts blocks (an adapter after block k changes hidden state k, the one `layers: k`
    reads); null: n/4, n/2, 3n/4 of the primary's n blocks (6, 12, 18 of 24). The field is always
    part of the hash, so these designs never share one with the late `gated_injection` designs
    stored as `mr_adapter` before (`search_space.legacy` reads those as `gated_injection`)."""

    kind: Literal["mr_adapter"] = "mr_adapter"
    at: Annotated[tuple[PositiveInt, ...] | None, AfterValidator(_increasing)] = None

    def positions(self, depth: int) -> tuple[int, ...]:
        """The blocks (1-based) an adapter follows, in a primary of `depth` blocks."""
        if self.at is None:
            return tuple(sorted({max(1, depth * k // 4) for k in (1, 2, 3)}))
        if self.at[-1] > depth:
            raise InvalidDesign(f"mr_adapter at {list(self.at)}: the primary expert has {depth} "
                                f"blocks; give positions from 1 to {depth}")
        return self.at


class CrossAttention(FusionParams):
    """Mini-Gemini patch info mining: primary tokens query co-located secondary windows."""

    kind: Literal["cross_attention"] = "cross_attention"
    heads: PositiveInt = 1


class Resampler(FusionParams):
    """Perceiver-style: m learnable queries per expert cross-attend to its tokens; at `width`
    (null: the LM's), with a Linear(width -> d) to the LM when that differs."""

    added: ClassVar[frozenset[str]] = frozenset({"width"})  # left out of the hash at default
    kind: Literal["resampler"] = "resampler"
    queries: PositiveInt = 16
    heads: PositiveInt = 4
    depth: PositiveInt = 1
    width: PositiveInt | None = None


class SVA(FusionParams):
    """Cambrian-1 Spatial Vision Aggregator: a G x G query grid attends to local windows.

    One learnable query expanded over the G x G cells attends to each cell's window of every
    expert, the global context re-injected in every layer. As Cambrian's connector
    (`cambrian-mllm/cambrian`, vision_sampler.py and cambrian_arch.py): each expert projected
    into `width` (Cambrian's `vision_hidden_size`, 1024), `depth` layers of
    VisionCrossAttentionLayer at that width, then the YAML `projector` from `width` to the LM
    (Cambrian: mlp2x_gelu, its `mm_projector`); `newline` appends Cambrian's `image_newline`
    token after every row, so the group is one G x (G + 1) grid. Cambrian's 16 heads are `heads`.
    """

    kind: Literal["sva"] = "sva"
    queries: SquareInt = 16          # G * G cells, one query vector expanded over them
    depth: PositiveInt = 1
    heads: PositiveInt = 4
    width: PositiveInt = 1024        # the connector's width (Cambrian: vision_hidden_size)
    newline: bool = False            # image_newline after every row: G x (G + 1) tokens


def _fewest(grids: Sequence[Grid]) -> Grid:
    return min(grids, key=lambda g: g[0] * g[1])


def _channel_concat(p: ChannelConcat, grids: Sequence[Grid]) -> list[Grid]:
    return [(p.grid, p.grid) if p.grid else _fewest(grids)]


def _sequence_concat(p: SequenceConcat, grids: Sequence[Grid]) -> list[Grid]:
    if not p.interleave or len(grids) == 1:
        return list(grids)
    if len(set(grids)) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in grids)
        raise InvalidDesign(f"interleave needs experts on equal grids (got {shown}); "
                            "give them equal `tokens` or set interleave: false")
    h, w = grids[0]
    return [(h, w * len(grids))]  # one group: E co-located tokens side by side per cell


def _primary(_: FusionParams, grids: Sequence[Grid]) -> list[Grid]:
    return [grids[0]]


def _query_grid(m: int) -> Grid:
    return (math.isqrt(m), math.isqrt(m)) if is_square(m) else (1, m)


def _resampler(p: Resampler, grids: Sequence[Grid]) -> list[Grid]:
    return [_query_grid(p.queries) for _ in grids]


def _sva(p: SVA, grids: Sequence[Grid]) -> list[Grid]:
    side = math.isqrt(p.queries)
    return [(side, side + p.newline)]  # one group; with newline its last column is the newlines


@dataclass(frozen=True)
class FusionKind:
    """`injects`: the operator reads windows of its experts' maps (mr_adapter, cross_attention,
    sva), so every expert enters it at full resolution; `on_primary`: its group lies on the
    primary's grid, so the primary's reduction applies to the fused group instead
    (`search_space.cost.fusion_plan`, which both the cost model and the built model read)."""

    params: type[FusionParams]
    groups: Callable[..., list[Grid]]
    min_experts: int = 1
    per_expert_projector: bool = False  # each expert has its own projector (a mapping may name them)
    live_primary: bool = False  # it runs inside the primary expert: the primary is never cached
    injects: bool = False       # it reads windows of its experts' maps: they enter at full resolution
    on_primary: bool = False    # its one group lies on the primary's grid


PER_EXPERT_PROJECTOR = frozenset({"sequence_concat", "resampler"})


def per_expert(projector: str | Sequence[str], experts: int) -> tuple[str, ...]:
    """One projector name per expert from a name or a sequence of them (as long as the experts)."""
    if isinstance(projector, str):
        return (projector,) * experts
    if len(projector) != experts:
        raise ValueError(f"got {len(projector)} projectors for {experts} experts")
    return tuple(projector)


FUSIONS: Registry[FusionKind] = Registry("fusion")
for _params, _groups, _min, _live, _injects in [
    (ChannelConcat, _channel_concat, 1, False, False),
    (SequenceConcat, _sequence_concat, 1, False, False),
    (GatedInjection, _primary, 2, False, False),  # the late variant: secondaries reduced, resized
    (MRAdapter, _primary, 2, True, True),
    (CrossAttention, _primary, 2, False, True),
    (Resampler, _resampler, 1, False, False),
    (SVA, _sva, 1, False, True),
]:
    # (the description: the docstring's first paragraph, on one line)
    _name = _params.model_fields["kind"].default
    _kind = FusionKind(_params, _groups, _min, _name in PER_EXPERT_PROJECTOR, _live, _injects,
                       on_primary=_groups is _primary)
    FUSIONS.register(_name, _kind,
                     " ".join((_params.__doc__ or "").split("\n\n")[0].split()))

FusionConfig = (ChannelConcat | SequenceConcat | GatedInjection | MRAdapter | CrossAttention | Resampler
                | SVA)
