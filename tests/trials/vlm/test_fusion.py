"""Fusion operators: one contract over every registered kind, plus each operator's own rule.

Contract (DESIGN.md): output grids equal the cost model's `FUSIONS.get(kind).groups`, for 1, 2
and 3 experts of different grids and widths; gradients reach every trainable parameter and
never the (frozen) expert features; two builds under one seed agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from search_space.components import PROJECTORS
from search_space.errors import InvalidDesign
from search_space.fusions import (
    FUSIONS,
    SVA,
    ChannelConcat,
    CrossAttention,
    FusionParams,
    GatedInjection,
    Resampler,
    SequenceConcat,
)
from trials.vlm.fusion import FUSION_MODULES, FusionModule, VisualTokens, build_fusion
from trials.vlm.reduce import Features

Spec = Sequence[tuple[int, int, int]]  # (h, w, C) per expert, primary first
B, D = 2, 16
EXPERT_SETS: dict[str, Spec] = {
    "1": [(6, 6, 16)],
    "2": [(4, 4, 16), (8, 8, 24)],
    "3": [(6, 6, 32), (4, 4, 16), (8, 8, 24)],
    "2-rect": [(2, 3, 16), (5, 7, 24)],
}
EQUAL_SETS: dict[str, Spec] = {"1": [(3, 3, 16)], "2": [(3, 3, 16), (3, 3, 24)],
                               "3": [(2, 2, 16), (2, 2, 24), (2, 2, 32)]}
PARAMS: list[FusionParams] = [
    ChannelConcat(), ChannelConcat(grid=3),
    SequenceConcat(), SequenceConcat(expert_embedding=True),
    GatedInjection(),
    CrossAttention(heads=1), CrossAttention(heads=2), CrossAttention(heads=3),
    Resampler(queries=4, heads=2, depth=1), Resampler(queries=6, heads=4, depth=2),
    Resampler(queries=4, heads=2, depth=1, width=12),
    SVA(queries=4, heads=2, depth=1, width=16), SVA(queries=9, heads=3, depth=2, width=24),
    SVA(queries=4, heads=3, depth=1, width=20, newline=True),  # inner width 21: rounded up to 3 heads
]
INTERLEAVE = [SequenceConcat(interleave=True), SequenceConcat(interleave=True, expert_embedding=True)]


def params_id(params: FusionParams) -> str:
    return "-".join(f"{k}={v}" for k, v in params.model_dump().items())


def make_feats(spec: Spec, seed: int = 0) -> list[Features]:
    g = torch.Generator().manual_seed(seed)
    return [Features(torch.randn(B, h * w, c, generator=g), (h, w)) for h, w, c in spec]


def build(params: FusionParams, spec: Spec, projector: str | Sequence[str] = "linear",
          seed: int = 0) -> FusionModule:
    torch.manual_seed(seed)
    return build_fusion(params, [c for _, _, c in spec], D, projector, grids=[(h, w) for h, w, _ in spec],
                        primary_depth=4)


def perturb(feats: list[Features], expert: int, rows: range, cols: range) -> list[Features]:
    """A copy of `feats` with expert `expert`'s map changed on rows x cols only."""
    f = feats[expert]
    fmap = f.tokens.clone().unflatten(1, f.grid)  # (B, h, w, C)
    region = fmap[:, rows.start:rows.stop, cols.start:cols.stop]
    region += torch.randn(region.shape, generator=torch.Generator().manual_seed(1))  # not per-token constant
    return [*feats[:expert], Features(fmap.flatten(1, 2), f.grid), *feats[expert + 1:]]


def check_contract(params: FusionParams, spec: Spec, projector: str | Sequence[str]) -> None:
    assert len(spec) >= FUSIONS.get(params.kind).min_experts
    feats = make_feats(spec)
    module = build(params, spec, projector)
    out = module(feats)
    assert isinstance(out, VisualTokens)
    assert out.grids == FUSIONS.get(params.kind).groups(params, [f.grid for f in feats])
    assert out.tokens.shape == (B, sum(h * w for h, w in out.grids), D)

    with torch.no_grad():  # zero-initialised output layers (gated_injection) block gradients at step 0
        for p in module.parameters():
            if not p.any():
                p.normal_(std=0.02)
    module(feats).tokens.sum().backward()
    silent = [name for name, p in module.named_parameters() if p.grad is None or not p.grad.any()]
    assert not silent, f"no gradient reaches {silent}"
    assert all(f.tokens.grad is None for f in feats)

    again = build(params, spec, projector)(feats).tokens
    assert torch.equal(build(params, spec, projector)(feats).tokens, again)


def test_registry_matches_search_space() -> None:
    assert set(FUSION_MODULES.names()) == set(FUSIONS.names())
    # an operator inside the primary expert has its own contract: test_mr_adapter_parity.py
    assert {p.kind for p in PARAMS} == {k for k in FUSIONS.names() if not FUSIONS.get(k).live_primary}
    with pytest.raises(KeyError, match="did you mean 'cross_attention'"):
        FUSION_MODULES.get("cross_atn")
    with pytest.raises(KeyError, match="did you mean 'mlp2x_gelu'"):
        build_fusion(ChannelConcat(), [8], D, "mlp2x_gel")


CONTRACT_CASES = [pytest.param(params, experts, projector,
                               id=f"{params_id(params)}-{experts}-{projector}")
                  for params in PARAMS for experts, spec in EXPERT_SETS.items()
                  for projector in PROJECTORS.names()
                  if len(spec) >= FUSIONS.get(params.kind).min_experts]


@pytest.mark.parametrize(("params", "experts", "projector"), CONTRACT_CASES)
def test_contract(params: FusionParams, experts: str, projector: str) -> None:
    check_contract(params, EXPERT_SETS[experts], projector)


@pytest.mark.parametrize("projector", PROJECTORS.names())
@pytest.mark.parametrize("heads", [1, 2])
def test_contract_cross_attention_on_a_stage_merged_map(heads: int, projector: str) -> None:
    """A 3x3 primary on a 24x24 map four stages wide (tiny-convnext, `merge_grid: largest`):
    M = 8, as Mini-Gemini's 24x24 CLIP grid on its 192x192 ConvNeXt map; with a second one."""
    check_contract(CrossAttention(heads=heads), [(3, 3, 16), (24, 24, 240)], projector)
    check_contract(CrossAttention(heads=heads), [(3, 3, 16), (24, 24, 240), (6, 6, 24)], projector)


@pytest.mark.parametrize("experts", EQUAL_SETS)
@pytest.mark.parametrize("params", INTERLEAVE, ids=params_id)
def test_contract_interleave(params: FusionParams, experts: str) -> None:
    check_contract(params, EQUAL_SETS[experts], "mlp2x_gelu")


def test_interleave_needs_equal_grids() -> None:
    spec = EXPERT_SETS["2"]
    with pytest.raises(InvalidDesign, match="interleave needs experts on equal grids"):
        build(SequenceConcat(interleave=True), spec)(make_feats(spec))


def test_interleave_order() -> None:
    """Token (r, c) of expert e goes to column c*E + e of one (h, w*E) group."""
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])[None, :, None].expand(1, 4, D)      # expert 0, (B, N, C)
    b = torch.tensor([10.0, 20.0, 30.0, 40.0])[None, :, None].expand(1, 4, D)  # expert 1
    module = build_fusion(SequenceConcat(interleave=True), [D, D], D, "linear")
    with torch.no_grad():
        for proj in module.projs:
            proj.weight.copy_(torch.eye(D))
            proj.bias.zero_()
    out = module([Features(a, (2, 2)), Features(b, (2, 2))])
    assert out.grids == [(2, 4)]
    assert out.tokens[0, :, 0].tolist() == [1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0]


@pytest.mark.parametrize("kind", FUSIONS.names())
def test_expert_count_checked(kind: str) -> None:
    spec = EXPERT_SETS["3"]
    params = FUSIONS.get(kind).params()
    if FUSIONS.get(kind).min_experts > 1:
        with pytest.raises(ValueError, match="needs at least 2 experts, got 1"):
            build(params, spec[:1])
    with pytest.raises(ValueError, match="built for 3 experts, got 2"):
        build(params, spec)(make_feats(spec)[:2])


@pytest.mark.parametrize("experts", ["2", "3"])
def test_gated_injection_starts_as_identity(experts: str) -> None:
    spec = EXPERT_SETS[experts]
    feats = make_feats(spec)
    module = build(GatedInjection(), spec, "mlp2x_gelu")
    assert torch.equal(module(feats).tokens, module.proj(feats[0].tokens))


@pytest.mark.parametrize("heads", [1, 2])
def test_cross_attention_sees_only_its_window(heads: int) -> None:
    """Primary 4x4; secondaries 8x8 and 7x7 (resized to 8x8): query (0, 0) owns rows/cols 0-1."""
    spec = [(4, 4, 16), (8, 8, 24), (7, 7, 32)]
    feats = make_feats(spec)
    module = build(CrossAttention(heads=heads), spec)
    base = module(feats).tokens  # (B, 16, D)
    for expert, far in [(1, range(3, 8)), (2, range(3, 7))]:
        out = module(perturb(feats, expert, far, far)).tokens
        torch.testing.assert_close(out[:, 0], base[:, 0], rtol=0, atol=0)
        assert not torch.allclose(out[:, 15], base[:, 15])
    near = module(perturb(feats, 1, range(1, 2), range(1, 2))).tokens
    assert not torch.allclose(near[:, 0], base[:, 0])


def test_sva_sees_only_its_window() -> None:
    """G = 2; experts 4x4 (m=2), 8x8 (m=4), 6x6 (m=3): query (0, 0) owns each map's top-left quarter."""
    spec = [(4, 4, 16), (8, 8, 24), (6, 6, 32)]
    feats = make_feats(spec)
    module = build(SVA(queries=4, heads=2, depth=2, width=16), spec)
    base = module(feats).tokens  # (B, 4, D)
    for expert, far in [(1, range(4, 8)), (2, range(3, 6))]:
        out = module(perturb(feats, expert, far, far)).tokens
        torch.testing.assert_close(out[:, 0], base[:, 0], rtol=0, atol=0)
        assert not torch.allclose(out[:, 3], base[:, 3])
    near = module(perturb(feats, 1, range(0, 1), range(0, 1))).tokens
    assert not torch.allclose(near[:, 0], base[:, 0])
    # the first expert also feeds the global context (the mean of its projected tokens), which
    # every query sees: changing its far quarter reaches query (0, 0) through the context only
    context = module(perturb(feats, 0, range(2, 4), range(2, 4))).tokens
    assert not torch.allclose(context[:, 0], base[:, 0])
    # with the context held (two of its tokens swapped: the same mean), query (0, 0) keeps its
    # output and query (1, 1), whose window they are in, does not
    first = feats[0].tokens.clone()
    first[:, [10, 15]] = first[:, [15, 10]]  # cells (2, 2) and (3, 3) of the 4x4 map
    swapped = module([Features(first, feats[0].grid), *feats[1:]]).tokens
    torch.testing.assert_close(swapped[:, 0], base[:, 0], rtol=0, atol=1e-6)
    assert not torch.allclose(swapped[:, 3], base[:, 3])


def test_sva_checks_its_grids() -> None:
    """The per-window position embeddings are built for the experts' grids: others are refused."""
    spec = EXPERT_SETS["2"]
    with pytest.raises(ValueError, match="sva is built for its experts' grids"):
        build_fusion(SVA(width=16), [16, 24], D, "linear")
    module = build(SVA(queries=4, width=16), spec)
    with pytest.raises(ValueError, match=r"built for expert grids \[\(4, 4\), \(8, 8\)\]"):
        module(make_feats([(4, 4, 16), (6, 6, 24)]))


@pytest.mark.parametrize("queries, grid", [(4, (2, 2)), (6, (1, 6)), (9, (3, 3))])
def test_resampler_query_grid(queries: int, grid: tuple[int, int]) -> None:
    spec = EXPERT_SETS["2"]
    out = build(Resampler(queries=queries), spec)(make_feats(spec))
    assert out.grids == [grid, grid]


MIXED = ("ln_mlp2x_gelu", "linear", "mlp2x_gelu")  # one projector per expert (COMM), primary first
PER_EXPERT = [p for p in PARAMS if FUSIONS.get(p.kind).per_expert_projector]


@pytest.mark.parametrize("experts", ["2", "3"])
@pytest.mark.parametrize("params", PER_EXPERT, ids=params_id)
def test_contract_with_a_projector_per_expert(params: FusionParams, experts: str) -> None:
    spec = EXPERT_SETS[experts]
    names = MIXED[:len(spec)]
    check_contract(params, spec, names)
    # nothing is shared between experts, so the module is the sum of one-expert modules, each
    # with its own projector (the projectors' sizes differ: a wrong pairing changes the count)
    size = sum(p.numel() for p in build(params, spec, names).parameters())
    alone = [build_fusion(params, [c], D, name) for (_, _, c), name in zip(spec, names, strict=True)]
    assert size == sum(p.numel() for m in alone for p in m.parameters())
    assert size != sum(p.numel() for p in build(params, spec, names[::-1]).parameters())


@pytest.mark.parametrize("params", [p for p in PARAMS if not FUSIONS.get(p.kind).per_expert_projector
                                    and FUSIONS.get(p.kind).min_experts <= 2], ids=params_id)
def test_a_shared_projector_refuses_one_per_expert(params: FusionParams) -> None:
    with pytest.raises(ValueError, match="one shared projector"):
        build(params, EXPERT_SETS["2"], ("linear", "mlp2x_gelu"))
    build(params, EXPERT_SETS["2"], ("linear", "linear"))  # the same name per expert is one
