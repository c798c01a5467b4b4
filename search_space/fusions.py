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


class MRAdapter(FusionParams):
    """LLaVA-HR: gated injection of secondary (high-res) experts into the primary."""

    kind: Literal["mr_adapter"] = "mr_adapter"


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
    """Cambrian-1 Spatial Vision Aggregator: a G x G query grid attends to local windows."""

    kind: Literal["sva"] = "sva"
    queries: SquareInt = 16
    depth: PositiveInt = 1
    heads: PositiveInt = 4


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
    return [_query_grid(p.queries)]


@dataclass(frozen=True)
class FusionKind:
    """`injects`: the operator reads windows of its experts' maps (mr_adapter, cross_attention,
    sva), so every expert enters it at full resolution; `on_primary`: its group lies on the
    primary's grid, so the primary's reduction applies to the fused group instead
    (`search_space.cost.fusion_plan`, which both the cost model and the built model read)."""

    params: type[FusionParams]
    groups: Callable[..., list[Grid]]
    min_experts: int = 1
    injects: bool = False
    on_primary: bool = False


FUSIONS: Registry[FusionKind] = Registry("fusion")
for _params, _groups, _min, _injects in [
    (ChannelConcat, _channel_concat, 1, False),
    (SequenceConcat, _sequence_concat, 1, False),
    (MRAdapter, _primary, 2, True),
    (CrossAttention, _primary, 2, True),
    (Resampler, _resampler, 1, False),
    (SVA, _sva, 1, True),
]:
    # (the description: the docstring's first paragraph, on one line)
    _kind = FusionKind(_params, _groups, _min, _injects, on_primary=_groups is _primary)
    FUSIONS.register(_params.model_fields["kind"].default, _kind,
                     " ".join((_params.__doc__ or "").split("\n\n")[0].split()))

FusionConfig = ChannelConcat | SequenceConcat | MRAdapter | CrossAttention | Resampler | SVA
