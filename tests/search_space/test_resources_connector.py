"""The connector's resource model against the real `trials.vlm` modules: parameters exact for
every fusion kind, projector and layer merge with 1, 2 and 3 experts of different grids and
widths; FLOPs equal to FlopCounterMode's (meta device, grouped convolutions counted by their
real size); saved activations within 20% of what autograd saves on CPU."""

from __future__ import annotations

import pytest
import torch

from search_space.components import MERGES, PROJECTORS
from search_space.fusions import FUSIONS
from search_space.resources.blocks import Flow
from search_space.resources.connector import (
    FUSION_COSTS,
    MERGE_COSTS,
    PROJECTOR_COSTS,
    ExpertShape,
    connector_cost,
)
from trials.measure import count_flops, saved_bytes
from trials.vlm.fusion import FUSION_MODULES, build_fusion
from trials.vlm.reduce import MERGE_MODULES, Features

SHAPES = [((4, 4), 32), ((8, 8), 48), ((6, 6), 16)]  # (grid, width) of up to three experts
D = 64
INSIDE_SHAPES = [((4, 4), 32), ((8, 8), 48), ((2, 2), 16)]  # pooled 2x, upsampled 2x
DEPTH = 4  # the primary's blocks (mr_adapter's default positions: 1, 2, 3)
FUSION_CASES = [{"kind": "channel_concat"}, {"kind": "channel_concat", "grid": 5},
                {"kind": "sequence_concat", "expert_embedding": True},
                {"kind": "gated_injection"}, {"kind": "mr_adapter"}, {"kind": "mr_adapter", "at": [2]},
                {"kind": "cross_attention", "heads": 2},
                {"kind": "resampler", "queries": 9, "heads": 2, "depth": 2},
                {"kind": "resampler", "queries": 5, "heads": 3, "depth": 1},
                {"kind": "resampler", "queries": 4, "heads": 2, "depth": 1, "width": 40},
                {"kind": "sva", "queries": 4, "depth": 2, "heads": 2, "width": 24},
                {"kind": "sva", "queries": 9, "depth": 1, "heads": 5, "width": 32, "newline": True}]
BATCH = 2


def test_every_registry_entry_has_a_cost() -> None:
    assert set(FUSION_COSTS.names()) == set(FUSIONS.names()) == set(FUSION_MODULES.names())
    assert set(PROJECTOR_COSTS.names()) == set(PROJECTORS.names())
    assert set(MERGE_COSTS.names()) == set(MERGES.names()) == set(MERGE_MODULES.names())


def _cases() -> list[tuple[dict, int, str | tuple[str, ...]]]:
    out = []
    for fusion in FUSION_CASES:
        need = FUSIONS.get(fusion["kind"]).min_experts
        out += [(fusion, n, projector) for n in (1, 2, 3) if n >= need for projector in PROJECTORS.names()]
        if FUSIONS.get(fusion["kind"]).per_expert_projector:  # one projector per expert (COMM)
            out += [(fusion, n, ("ln_mlp2x_gelu", "linear", "mlp2x_gelu")[:n]) for n in (2, 3)]
    return out


def _ids(case: tuple[dict, int, str | tuple[str, ...]]) -> str:
    fusion, n, projector = case
    names = projector if isinstance(projector, str) else "+".join(projector)
    return "-".join(str(v) for v in fusion.values()) + f"-{n}-{names}"


@pytest.mark.parametrize("case", _cases(), ids=_ids)
def test_fusion_params_flops_and_activations(case: tuple[dict, int, str | tuple[str, ...]]) -> None:
    fusion, n, projector = case
    params = FUSIONS.get(fusion["kind"]).params.model_validate(fusion)
    inside = FUSIONS.get(fusion["kind"]).live_primary  # secondaries pooled by an integer ratio
    shapes = (INSIDE_SHAPES if inside else SHAPES)[:n]
    widths = [w for _, w in shapes]
    est = connector_cost(params, [ExpertShape(g, w, depth=DEPTH) for g, w in shapes], D, projector,
                         Flow(True, recompute=False))
    grids = [g for g, _ in shapes]
    module = build_fusion(params, widths, D, projector, grids=grids, primary_depth=DEPTH)
    assert sum(p.numel() for p in module.parameters()) == est.params
    # an operator inside the primary: its adapters in turn on the primary's tokens (no ViT)
    run = "connector_only" if module.live_primary else "forward"

    meta = build_fusion(params, widths, D, projector, grids=grids, primary_depth=DEPTH).to("meta")
    meta_feats = [Features(torch.randn(BATCH, g[0] * g[1], w, device="meta"), g) for g, w in shapes]
    forward = count_flops(lambda: getattr(meta, run)(meta_feats))
    total = count_flops(lambda: getattr(meta, run)(meta_feats).tokens.sum().backward())
    assert forward == BATCH * est.forward
    assert total - forward == BATCH * est.backward

    feats = [Features(torch.randn(BATCH, g[0] * g[1], w), g) for g, w in shapes]
    measured = saved_bytes(lambda: getattr(module, run)(feats).tokens, exclude=list(module.parameters()))
    assert measured == pytest.approx(BATCH * 4 * est.saved, rel=0.2)


MERGE_CASES = [(merge, widths) for merge in ("concat", "mean", "layerscale")
               for widths in ([32], [32, 32, 32], [16, 32])
               if merge != "mean" or len(set(widths)) == 1]  # mean of unequal widths is refused


@pytest.mark.parametrize(("merge", "widths"), MERGE_CASES)
def test_merge_params_flops_and_widths(merge: str, widths: list[int]) -> None:
    rule, tokens = MERGE_COSTS.get(merge), 16
    module = MERGE_MODULES.get(merge)(widths)
    assert rule.width(widths) == module.out_width == MERGE_MODULES.get(merge).width_after(widths)
    est = rule.cost(tokens, widths, Flow(True, recompute=False))
    assert sum(p.numel() for p in module.parameters()) == est.params
    if len(widths) > 1:
        layers = [Features(torch.randn(BATCH, tokens, w, device="meta"), (4, 4)) for w in widths]
        meta = MERGE_MODULES.get(merge)(widths).to("meta")
        forward = count_flops(lambda: meta(layers))
        assert forward == BATCH * est.forward
        total = count_flops(lambda: meta(layers).tokens.sum().backward()) if est.params else forward
        assert total - forward == BATCH * est.backward


def test_gradients_into_the_connector_cost_input_grads() -> None:
    """A training expert's tokens carry a gradient: the first layers' input gradients count."""
    params = FUSIONS.get("sequence_concat").params()
    frozen = connector_cost(params, [ExpertShape((4, 4), 32)], D, "linear", Flow(True))
    live = connector_cost(params, [ExpertShape((4, 4), 32, grad=True)], D, "linear", Flow(True))
    assert live.backward == 2 * frozen.backward  # grad-input as well as grad-weight
    held = connector_cost(params, [ExpertShape((4, 4), 32)], D, "linear", Flow(False))
    assert held.backward == 0 and held.saved == 0 and held.params == frozen.params


LIVE = ((False, False, False), (True, False, False), (False, True, False), (True, True, True))
SVA_FLOWS = [(trains, grads) for trains in (True, False) for grads in LIVE if trains or any(grads)]


@pytest.mark.parametrize(("trains", "grads"), SVA_FLOWS)
def test_sva_flops_with_live_experts(trains: bool, grads: tuple[bool, ...]) -> None:
    """sva's backward FLOPs when the connector is held or trains and some experts carry a
    gradient (a frozen connector over a live secondary: the first layer's queries need none)."""
    params = FUSIONS.get("sva").params(queries=4, depth=2, heads=2, width=24, newline=True)
    shapes = [ExpertShape(g, w, grad) for (g, w), grad in zip(SHAPES, grads, strict=True)]
    est = connector_cost(params, shapes, D, "mlp2x_gelu", Flow(trains, recompute=False))
    meta = build_fusion(params, [s.width for s in shapes], D, "mlp2x_gelu",
                        grids=[s.grid for s in shapes]).to("meta").requires_grad_(trains)
    feats = [Features(torch.randn(BATCH, s.tokens, s.width, device="meta", requires_grad=s.grad), s.grid)
             for s in shapes]
    forward = count_flops(lambda: meta(feats))
    total = count_flops(lambda: meta(feats).tokens.sum().backward())
    assert forward == BATCH * est.forward
    assert total - forward == BATCH * est.backward


@pytest.mark.parametrize("grads", [(True, False, False), (False, True, False), (False, False, True),
                                   (True, True, True)])
def test_cross_attention_held_with_live_experts(grads: tuple[bool, bool, bool]) -> None:
    """A held connector (its weights frozen) between experts that train: backward FLOPs and the
    bytes saved follow whichever of Q (primary) and K/V (each secondary) need a gradient; a 3x3
    primary on a 24x24 map (M = 8) and a 6x6 one (M = 2)."""
    shapes = [((3, 3), 32), ((24, 24), 48), ((6, 6), 16)]
    params = FUSIONS.get("cross_attention").params(heads=2)
    experts = [ExpertShape(g, w, grad) for (g, w), grad in zip(shapes, grads, strict=True)]
    est = connector_cost(params, experts, D, "mlp2x_gelu", Flow(False, recompute=False))

    def feats(device: str) -> list[Features]:
        return [Features(torch.randn(BATCH, g[0] * g[1], w, device=device, requires_grad=grad), g)
                for (g, w), grad in zip(shapes, grads, strict=True)]

    meta = build_fusion(params, [w for _, w in shapes], D, "mlp2x_gelu").requires_grad_(False).to("meta")
    x = feats("meta")
    forward = count_flops(lambda: meta(x))
    assert forward == BATCH * est.forward
    assert count_flops(lambda: meta(x).tokens.sum().backward()) - forward == BATCH * est.backward
    module = build_fusion(params, [w for _, w in shapes], D, "mlp2x_gelu").requires_grad_(False)
    real = feats("cpu")
    measured = saved_bytes(lambda: module(real).tokens, exclude=list(module.parameters()))
    assert measured == BATCH * 4 * est.saved
