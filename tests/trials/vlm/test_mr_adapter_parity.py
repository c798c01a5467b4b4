"""The faithful mr_adapter (LLaVA-HR's MR-Adapter inside the primary ViT).

Parity reference: `luogen1996/LLaVA-HR`, llava_hr/model/multimodal_encoder/
multipath_encoder_wapper.py at commit 1212ffbb0772c7c97fd3ce625e53fee6e6676536
(`S2FStitchAlignModuleV2`, `MultiPathAlignModule`), written out below and run on our weights.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space import MRAdapter, TrialConfig
from search_space.legacy import stored_design
from search_space.resources.blocks import Flow
from search_space.resources.connector import ExpertShape, connector_cost
from trials.vlm.experts import ExpertTokens
from trials.vlm.fusion import build_fusion
from trials.vlm.fusion.mr_adapter import Combine, Stitch
from trials.vlm.model import build_vlm
from trials.vlm.reduce import Features


def _align(src: Tensor, dst: Tensor) -> Tensor:  # `src2dst_align`, as in the official code
    if src.shape[1] < dst.shape[1]:
        b, n, c = src.shape
        s, d = int(math.sqrt(n)), int(math.sqrt(dst.shape[1]))
        src = F.interpolate(src.transpose(1, 2).reshape(b, c, s, s).float(), size=(d, d),
                            mode="bilinear", align_corners=True)
        return src.reshape(b, c, -1).transpose(1, 2)
    if src.shape[1] > dst.shape[1]:
        b, n, c = src.shape
        s, d = int(math.sqrt(n)), int(math.sqrt(dst.shape[1]))
        src = F.avg_pool2d(src.transpose(1, 2).reshape(b, c, s, s), s // d, s // d)
        return src.reshape(b, c, -1).transpose(1, 2)
    return src


def reference_stitch(m: Stitch, fast: Tensor, slow_map: Tensor) -> Tensor:
    """`S2FStitchAlignModuleV2.forward` with its Conv1x1 weights taken from our Linear ones."""
    b = slow_map.shape[0]
    d = fast.shape[2]
    conv1 = lambda lin, x: F.conv2d(x, lin.weight[:, :, None, None], lin.bias)  # noqa: E731
    slow = conv1(m.slow_proj, F.gelu(conv1(m.slow_conv, slow_map)))
    slow = slow.view(b, d, -1).transpose(1, 2)
    slow = _align(slow, fast)
    size = int(math.sqrt(fast.shape[1]))
    f = fast.transpose(1, 2).reshape(b, d, size, size)
    f = f + conv1(m.fast_proj, F.gelu(m.fast_conv(f)))
    f = f.reshape(b, d, size * size).transpose(1, 2)
    gate = m.gate(torch.cat([f, slow], -1).mean(1)).unsqueeze(1)
    return f + slow * gate.tanh()


def randomise(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(std=0.1)


@pytest.mark.parametrize("slow_side", [8, 4, 2])  # pooled 2x, equal, upsampled 2x
def test_stitch_equals_llava_hr(slow_side: int) -> None:
    torch.manual_seed(0)
    m = Stitch(16, 24)
    randomise(m)
    fast, slow_map = torch.randn(2, 16, 16), torch.randn(2, 24, slow_side, slow_side)
    slow = Features(slow_map.flatten(2).transpose(1, 2), (slow_side, slow_side))
    torch.testing.assert_close(m(fast, (4, 4), slow), reference_stitch(m, fast, slow_map),
                               rtol=0, atol=1e-5)


def test_stitch_starts_as_identity_and_combine_equals_multipath_align() -> None:
    torch.manual_seed(0)
    fast, slow = torch.randn(2, 16, 16), Features(torch.randn(2, 64, 24), (8, 8))
    assert torch.equal(Stitch(16, 24)(fast, (4, 4), slow), fast)  # zero-initialised outputs
    combine = Combine(16, [24])
    ref = combine.fast_proj(fast) + combine.slow_proj[0](_align(slow.tokens, fast))
    torch.testing.assert_close(combine(Features(fast, (4, 4)), [slow]), ref, rtol=0, atol=1e-5)


def _primary() -> tuple[ExpertTokens, Tensor]:
    torch.manual_seed(0)
    tokens = ExpertTokens(TrialConfig.model_validate(
        {"experts": {"clip": {"source": "tiny-clip"}}}).experts["clip"])
    return tokens, torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)


def _states(tokens: ExpertTokens, images: Tensor, inject: dict | None = None) -> list[Tensor]:
    expert = tokens.expert
    pixels = expert.preprocess(images)
    with expert.adapter.inject(expert.model, inject or {}, pixels.shape[-1]):
        return [s for s, _ in expert.adapter.layers(expert.model, pixels)]


def test_placement_inside_the_vit() -> None:
    """Zero-initialised adapters leave the ViT as it was; one changed at block 2 changes hidden
    states 2.. and not 0, 1."""
    tokens, images = _primary()
    fusion = build_fusion(MRAdapter(), [64, 32], 16, "linear", primary_depth=4)
    assert fusion.positions == (1, 2, 3)
    slow = [Features(torch.randn(2, 144, 32), (12, 12))]
    plain = _states(tokens, images)
    inject = {k: (lambda x, g, i=i: fusion.adapt(i, x, g, slow)) for i, k in enumerate(fusion.positions)}
    with torch.no_grad():
        for a, b in zip(_states(tokens, images, inject), plain, strict=True):
            assert torch.equal(a, b)
        randomise(fusion.adapters[1])
        changed = _states(tokens, images, inject)
    for k, (a, b) in enumerate(zip(changed, plain, strict=True)):
        assert torch.equal(a, b) == (k < 2), k


def test_gradients_reach_the_adapters_only_and_runs_repeat() -> None:
    tokens, images = _primary()
    fusion = build_fusion(MRAdapter(at=(1, 3)), [64, 32], 16, "linear", primary_depth=4)
    randomise(fusion)
    slow = [Features(torch.randn(2, 36, 32), (6, 6))]  # upsampled to the ViT's 12x12
    layers = fusion.primary_layers(tokens, images, slow)
    out = fusion([tokens.merge(layers), *slow]).tokens
    out.sum().backward()
    assert all(p.grad is not None and p.grad.any() for p in fusion.parameters())
    assert all(p.grad is None for p in tokens.expert.parameters())
    again = fusion([tokens.merge(fusion.primary_layers(tokens, images, slow)), *slow]).tokens
    assert torch.equal(out, again)


def test_a_tiny_vlm_trains_with_the_primary_live_and_the_secondary_cached() -> None:
    torch.manual_seed(0)
    point = TrialConfig.model_validate({
        "data": {"image_size": 64}, "language_model": {"train": "frozen"},
        "experts": {"clip": {"source": "tiny-clip", "tokens": 16}, "conv": {"source": "tiny-convnext",
                                                                           "layers": 2}},
        "fusion": {"kind": "mr_adapter"}, "projector": "linear"})
    vlm = build_vlm(point)
    assert vlm.live == ["clip"]
    images = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    cached = vlm.expert_features(images)  # what the feature cache stores: the secondary only
    assert set(cached) == {"conv"}
    with pytest.raises(ValueError, match="runs inside the primary expert"):
        vlm.visual(images, {**cached, "clip": cached["conv"]})
    vlm.train_only(["connector"])
    before = [p.detach().clone() for p in vlm.fusion.adapters.parameters()]
    opt = torch.optim.AdamW(vlm.trainable_parts["connector"], lr=1e-2)
    batch = vlm.encode(["what color ?", "how many ?"], ["red", "3"])
    losses = []
    for _ in range(3):
        loss = vlm(**batch, images=images, features=cached)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    after = list(vlm.fusion.adapters.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_parameters_at_llava_hr_scale() -> None:
    """CLIP-L/336 (1024 wide, 24 blocks, 24x24), ConvNeXt-L's last stage (1536 wide, 32x32 at
    1024 px), 3 adapters, mlp2x_gelu to Vicuna-7B (4096): module on meta == cost model."""
    shapes = [ExpertShape((24, 24), 1024, depth=24), ExpertShape((32, 32), 1536)]
    est = connector_cost(MRAdapter(), shapes, 4096, "mlp2x_gelu", Flow(True))
    with torch.device("meta"):
        module = build_fusion(MRAdapter(), [1024, 1536], 4096, "mlp2x_gelu", primary_depth=24)
    assert module.positions == (6, 12, 18)
    total = sum(p.numel() for p in module.parameters())
    inside = sum(p.numel() for p in [*module.adapters.parameters(), *module.combine.parameters()])
    assert total == est.params == 41_858_563
    assert inside == 20_878_851  # 3 x 6,085,121 adapters + 2,623,488 MultiPathAlign


def test_positions_and_stored_late_designs() -> None:
    assert MRAdapter().positions(24) == (6, 12, 18) and MRAdapter().positions(2) == (1,)
    with pytest.raises(ValueError, match="increasing order"):
        MRAdapter(at=(12, 6))
    point = TrialConfig.model_validate({"experts": {"a": {"source": "tiny-clip"}, "b": {
        "source": "tiny-convnext"}}, "fusion": {"kind": "mr_adapter"}})
    stored = point.canonical()
    assert stored["fusion"] == {"at": None, "kind": "mr_adapter"}
    assert stored_design(stored) == stored  # today's designs read as they are
    old = {**stored, "fusion": {"kind": "mr_adapter"}}  # written before: the late operator
    assert stored_design(old)["fusion"] == {"kind": "gated_injection"}


def test_the_design_check_names_the_fix() -> None:
    from search_space.cost import point_cost
    from search_space.errors import InvalidDesign
    from search_space.fusions import INSIDE_FAMILIES
    from trials.vlm.experts import ADAPTERS

    assert {n for n, a in ADAPTERS.items() if a.blocks_path} == INSIDE_FAMILIES
    base = {"experts": {"a": {"source": "tiny-clip"}, "b": {"source": "tiny-convnext"}},
            "fusion": {"kind": "mr_adapter"}}
    assert point_cost(TrialConfig.model_validate(base)).groups == ((12, 12),)
    cases = [({"a": {"source": "tiny-convnext"}, "b": {"source": "tiny-clip"}}, {}, "is a convnext"),
             ({"a": {"source": "tiny-clip", "layers": [-1, -2], "merge": "concat"},
               "b": {"source": "tiny-convnext"}}, {}, "concat of 2 layers"),
             (base["experts"], {"at": [2, 9]}, "has 4 blocks")]
    for experts, extra, message in cases:
        point = TrialConfig.model_validate({"experts": experts, "fusion": {"kind": "mr_adapter", **extra}})
        with pytest.raises(InvalidDesign, match=message):
            point_cost(point)
