"""Token reduction per expert (`reduce:` pool / resize / unshuffle) and SAM's neck as a layer:
the modules' grids and widths equal the cost model's for every preset, LEO's pixel-unshuffle
parity, the feature cache round trip of reduced layers, and the built VLM against the cost
model (injection fusions reading their experts at full resolution)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers

from search_space import InvalidDesign, TrialConfig, point_cost
from search_space.components import MERGES
from search_space.cost import expert_grid, fusion_plan
from search_space.fusions import FUSIONS
from search_space.point import ExpertConfig
from search_space.presets import PRESETS
from search_space.reductions import REDUCTIONS
from trials.cache import FeatureCache, cache_key
from trials.vlm.experts import Expert, ExpertTokens, out_width
from trials.vlm.model import build_vlm
from trials.vlm.reduce import REDUCE_FUNCTIONS, Features, reduce_features

# (preset, layers, tokens): tokens that every reduction can reach (unshuffle: a whole factor)
CASES = [("tiny-clip", -1, 36), ("tiny-clip", (0, -1), 9), ("tiny-sam", "neck", 16),
         ("tiny-sam", ("neck", -1), 4), ("tiny-convnext", (1, 2), 36), ("tiny-dinov2", -2, 16)]


def test_registries_match() -> None:
    assert sorted(REDUCE_FUNCTIONS.names()) == sorted(REDUCTIONS.names()) == ["pool", "resize", "unshuffle"]


@pytest.mark.parametrize("merge", MERGES.names())
@pytest.mark.parametrize("reduce", REDUCTIONS.names())
@pytest.mark.parametrize(("name", "layers", "tokens"), CASES)
def test_module_grid_and_width_equal_the_cost_model(name: str, layers: int | str | tuple, tokens: int,
                                                    reduce: str, merge: str) -> None:
    cfg = ExpertConfig(source=name, layers=layers, tokens=tokens, reduce=reduce, merge=merge)
    info = PRESETS.get(name)
    widths = {info.layer_width(i) for i in cfg.layer_list}
    if merge == "mean" and len(widths) > 1:
        pytest.skip("mean needs equally wide layers")
    module = ExpertTokens(cfg)
    size = info.image_size
    out = module(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8))
    assert out.grid == expert_grid(cfg) == (round(tokens ** 0.5),) * 2
    assert out.tokens.shape == (2, tokens, out_width(cfg)) and module.out_width == out_width(cfg)
    cached = module.features(torch.zeros(1, 3, size, size, dtype=torch.uint8))
    assert all(f.grid == out.grid for f in cached)  # the cacheable part ends at the final grid
    if reduce == "unshuffle":  # each layer widened by its own r^2
        r2 = [(info.grid(i)[0] // out.grid[0]) ** 2 for i in cfg.layer_list]
        assert [f.width for f in cached] == [info.layer_width(i) * r for i, r in zip(cfg.layer_list, r2,
                                                                                     strict=True)]


def test_unshuffle_needs_a_whole_factor() -> None:
    cfg = ExpertConfig(source="tiny-clip", tokens=16, reduce="unshuffle")  # 12x12 -> 4x4: r = 3
    assert expert_grid(cfg) == (4, 4) and out_width(cfg) == 64 * 9
    bad = ExpertConfig(source="tiny-clip", tokens=25, reduce="unshuffle")
    with pytest.raises(InvalidDesign, match="use tokens one of 144, 36, 16, 9, 4, 1"):
        expert_grid(bad)
    with pytest.raises(InvalidDesign, match="144, 36, 16"):
        ExpertTokens(bad)


def test_mean_and_concat_commute_with_unshuffle() -> None:
    """Reduction before the merge (the cache rule) equals after it for mean exactly and for
    concat up to the channels' order."""
    g = torch.Generator().manual_seed(0)
    layers = [Features(torch.randn(2, 64, 3, generator=g), (8, 8)) for _ in range(2)]
    before = [reduce_features(f, 4, "unshuffle") for f in layers]
    mean = reduce_features(Features((layers[0].tokens + layers[1].tokens) / 2, (8, 8)), 4, "unshuffle")
    torch.testing.assert_close((before[0].tokens + before[1].tokens) / 2, mean.tokens)
    cat = reduce_features(Features(torch.cat([f.tokens for f in layers], -1), (8, 8)), 4, "unshuffle")
    per = torch.cat([f.tokens for f in before], -1)
    assert sorted(cat.tokens[0, 0].tolist()) == sorted(per[0, 0].tolist())


# ---- LEO parity (Mozhgan91/LEO, leo_chat/leo/model/leo_chat/modeling_leo_chat.py, commit
# d2787c646e931041b08635f23f722db6e077203b): `LeoModel.pixel_unshuffle` (InternViT, ps_version
# v2) and `LeoModel.pixel_unshuffle_sam` (SAM's neck), restated from the official methods.

def leo_pixel_unshuffle(x: torch.Tensor, scale_factor: float = 0.5) -> torch.Tensor:
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale_factor), int(c / scale_factor))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
    return x.permute(0, 2, 1, 3).contiguous()  # ps_version v2


def leo_pixel_unshuffle_sam(x: torch.Tensor, scale_factor: int = 4) -> torch.Tensor:
    x = F.pixel_unshuffle(x, int(scale_factor))  # N, C, H, W
    return x.permute(0, 2, 3, 1).contiguous()    # N, H, W, C


def test_unshuffle_equals_leos_internvit_path() -> None:
    """InternViT's 32x32x1024 -> 16x16x4096 in LEO's channel order (r0c0, r0c1, r1c0, r1c1)."""
    x = torch.randn(2, 32, 32, 1024)  # (B, h, w, C) after LEO drops the class token
    ours = reduce_features(Features(x.reshape(2, 1024, 1024), (32, 32)), 256, "unshuffle")
    theirs = leo_pixel_unshuffle(x).reshape(2, 256, 4096)
    assert ours.grid == (16, 16)
    torch.testing.assert_close(ours.tokens, theirs, rtol=0, atol=0)


def test_unshuffle_equals_leos_sam_path_up_to_its_channel_order() -> None:
    """SAM's neck 64x64x256 -> 16x16x4096: LEO's SAM path uses torch's pixel_unshuffle, whose
    channels are channel-major (c, dr, dc) where ours (and LEO's InternViT path) are window-major
    (dr, dc, c): the same numbers under one fixed permutation, which the projector's first
    Linear absorbs (a permuted weight gives identical outputs)."""
    neck = torch.randn(2, 256, 64, 64)  # SamVisionModel(...).last_hidden_state
    tokens = neck.flatten(2).transpose(1, 2)  # how the SAM adapter reads the neck
    ours = reduce_features(Features(tokens, (64, 64)), 256, "unshuffle").tokens  # (2, 256, 4096)
    theirs = leo_pixel_unshuffle_sam(neck).reshape(2, 256, 4096)
    r, c = 4, 256
    perm = torch.arange(r * r * c).view(c, r * r).t().reshape(-1)  # ours[k] = theirs[perm[k]]
    torch.testing.assert_close(ours, theirs[..., perm], rtol=0, atol=0)
    assert not torch.equal(ours, theirs)


def test_resize_is_bilinear_with_aligned_corners() -> None:
    x = torch.randn(1, 64, 5)
    ours = reduce_features(Features(x, (8, 8)), 144, "resize")
    fmap = x.transpose(1, 2).reshape(1, 5, 8, 8)
    theirs = F.interpolate(fmap, size=(12, 12), mode="bilinear", align_corners=True)
    theirs = theirs.flatten(2).transpose(1, 2)
    assert ours.grid == (12, 12)
    torch.testing.assert_close(ours.tokens, theirs)


# ---- SAM's neck ------------------------------------------------------------------------------

def test_neck_is_the_sam_models_last_hidden_state() -> None:
    expert = Expert(ExpertConfig(source="tiny-sam", layers=("neck", -1)))
    images = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8)
    neck, last = expert(images)
    with torch.no_grad():
        out = expert.model(pixel_values=expert.preprocess(images), output_hidden_states=True)
    assert neck.grid == (8, 8) and neck.width == PRESETS.get("tiny-sam").neck_width == 32
    torch.testing.assert_close(neck.tokens, out.last_hidden_state.flatten(2).transpose(1, 2))
    torch.testing.assert_close(last.tokens, out.hidden_states[-1].reshape(2, 64, 32))


def test_sam_vit_large_neck_geometry() -> None:
    """facebook/sam-vit-large: 64x64 at 1024 px, the neck 256 wide (blocks 1024); built from its
    config on the meta device (nothing downloaded)."""
    cfg = ExpertConfig(source="facebook/sam-vit-large", layers="neck", tokens=256, reduce="unshuffle")
    assert expert_grid(cfg) == (16, 16) and out_width(cfg) == 4096
    assert out_width(cfg.model_copy(update={"layers": -1, "tokens": None, "reduce": "pool"})) == 1024
    with torch.device("meta"):
        expert = Expert(cfg, random_weights=True)
        neck = expert.adapter.select(expert.model, torch.empty(1, 3, 1024, 1024), ("neck",))[0]
    assert neck[0].shape == (1, 64 * 64, 256) and neck[1] == (64, 64)


def test_a_neck_only_sam_has() -> None:
    with pytest.raises(ValueError, match="has no neck; only SAM experts do"):
        Expert(ExpertConfig(source="tiny-clip", layers="neck"))


# ---- the feature cache ----------------------------------------------------------------------

@pytest.mark.parametrize("reduce", REDUCTIONS.names())
def test_reduced_features_round_trip_through_the_cache(reduce: str, tmp_path: Path) -> None:
    cfg = ExpertConfig(source="tiny-sam", layers=("neck", -1), merge="concat", tokens=16, reduce=reduce)
    module = ExpertTokens(cfg)
    images = torch.randint(0, 256, (3, 3, 128, 128), dtype=torch.uint8)
    key = cache_key(module.expert.identity, 128, module.expert.layers, cfg.tokens, "data", reduce=reduce)
    FeatureCache(tmp_path).get(key, lambda: module.features(images))
    stored = FeatureCache(tmp_path).get(key, lambda: pytest.fail("recomputed"))  # from disk
    cached = [Features(torch.as_tensor(f.tokens[:]), f.grid) for f in stored]
    torch.testing.assert_close(module.merge(cached).tokens, module(images).tokens)
    others = {cache_key(module.expert.identity, 128, module.expert.layers, 16, "data", reduce=r)
              for r in REDUCTIONS.names()}
    assert len(others) == 3  # the reduction is part of the key ...
    assert cache_key("e", 128, (-1,), 16, "d") == cache_key("e", 128, (-1,), 16, "d", reduce="pool")
    assert cache_key("e", 128, (-1,), None, "d", reduce="resize") == cache_key("e", 128, (-1,), None, "d")


def test_transformers_sam_output_is_channels_first() -> None:
    """What the neck reading relies on: HF's SamVisionModel returns the neck (B, C, H, W)."""
    model = transformers.SamVisionModel(transformers.SamVisionConfig(**PRESETS.get("tiny-sam").config))
    out = model(pixel_values=torch.zeros(1, 3, 128, 128), output_hidden_states=True)
    assert out.last_hidden_state.shape == (1, 32, 8, 8) and out.hidden_states[-1].shape == (1, 8, 8, 32)


# ---- the built VLM: reductions reach the fusion, injection fusions at full resolution -------

def vlm_point(kind: str, clip: dict, sam: dict, **fusion: object) -> TrialConfig:
    return TrialConfig.model_validate({
        "name": "t", "data": {"image_size": 64}, "language_model": {"train": "frozen"},
        "experts": {"clip": {"source": "tiny-clip", **clip}, "sam": {"source": "tiny-sam", **sam}},
        "fusion": {"kind": kind, **fusion}})


GEOMETRY_CASES = [
    ("channel_concat", {"tokens": 36, "reduce": "unshuffle"}, {"layers": "neck", "tokens": 16,
                                                             "reduce": "resize"}, {}),
    ("sequence_concat", {"tokens": 16, "reduce": "unshuffle"}, {"layers": ["neck", -1], "merge": "mean",
                                                              "tokens": 16, "reduce": "unshuffle"},
     {"interleave": True}),
    ("resampler", {"tokens": 9, "reduce": "unshuffle"}, {"layers": "neck"}, {"queries": 4}),
    ("mr_adapter", {"tokens": 16, "reduce": "resize"}, {"layers": "neck", "tokens": 4}, {}),
    ("cross_attention", {"tokens": 36}, {"layers": ["neck", -1], "merge": "concat"}, {}),
    ("sva", {"tokens": 16}, {"layers": "neck", "tokens": 4}, {"queries": 4}),
]


@pytest.mark.parametrize(("kind", "clip", "sam", "fusion"), GEOMETRY_CASES,
                         ids=[c[0] for c in GEOMETRY_CASES])
def test_vlm_equals_the_cost_model(kind: str, clip: dict, sam: dict, fusion: dict) -> None:
    p = vlm_point(kind, clip, sam, **fusion)
    vlm = build_vlm(p, random_weights=True)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    cost, plan = point_cost(p), fusion_plan(p)
    visual = vlm.visual(images)
    assert visual.grids == list(cost.groups) and vlm.visual_cost()[0] == cost.visual_tokens
    feats = vlm.expert_features(images)  # what the cache holds: the grids the fusion reads
    assert set(feats) == {n for n, _ in plan.experts} - set(vlm.live)  # mr_adapter's primary runs live
    for name, cfg in plan.experts:
        assert vlm.fusion.widths[vlm.expert_names.index(name)] == out_width(cfg)
        if name in feats:
            assert {f.grid for f in feats[name]} == {expert_grid(cfg)}
    if FUSIONS.get(kind).injects:  # the secondary at full resolution: sam's 8x8
        assert {f.grid for f in feats["sam"]} == {(8, 8)}
    again = vlm.visual(images if vlm.live else None, features=feats)
    torch.testing.assert_close(again.tokens, visual.tokens)


def test_an_unshuffled_primary_of_an_injection_is_not_built() -> None:
    with pytest.raises(InvalidDesign, match="use reduce: pool or resize"):
        build_vlm(vlm_point("cross_attention", {"tokens": 16, "reduce": "unshuffle"}, {}))


# ---- CONTRACT.md's mapping form of `reduce:` builds the model of its name form --------------

MAPPING_CASES = [  # (fusion, clip, sam) in the mapping form; NAME_FORM gives each its name form
    ("sequence_concat", {"reduce": {"kind": "unshuffle", "factor": 2}},
     {"layers": ["neck", -1], "merge": "concat", "reduce": {"kind": "resize", "grid": 4}}),
    ("channel_concat", {"reduce": {"kind": "pool", "grid": 6}},
     {"layers": "neck", "reduce": {"kind": "unshuffle", "factor": 2}}),
    ("cross_attention", {"reduce": {"kind": "resize", "grid": 4}}, {"layers": "neck"}),
]
NAME_FORM = {"unshuffle": lambda m, side: side // m["factor"], "pool": lambda m, side: m["grid"],
             "resize": lambda m, side: m["grid"]}


def name_form(cfg: dict, side: int) -> dict:
    """`cfg` with its reduce mapping written as tokens + name (layers of side x side)."""
    mapping = cfg.get("reduce")
    if not isinstance(mapping, dict):
        return cfg
    s = NAME_FORM[mapping["kind"]](mapping, side)
    return {**cfg, "tokens": s * s, "reduce": mapping["kind"]}


@pytest.mark.parametrize(("kind", "clip", "sam"), MAPPING_CASES, ids=[c[0] for c in MAPPING_CASES])
def test_the_mapping_form_builds_the_name_forms_model(kind: str, clip: dict, sam: dict) -> None:
    mapping = vlm_point(kind, clip, sam)
    name = vlm_point(kind, name_form(clip, 12), name_form(sam, 8))  # tiny-clip 12x12, tiny-sam 8x8
    assert mapping.config_hash != name.config_hash
    models = []
    for p in (mapping, name):
        torch.manual_seed(0)
        models.append(build_vlm(p, random_weights=True))
    a, b = models
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    for n in a.expert_names:  # the same reduction, so the same cache key (trials.features)
        assert a.experts[n].reduction == b.experts[n].reduction
        assert a.experts[n].out_width == b.experts[n].out_width
    fa, fb = a.expert_features(images), b.expert_features(images)
    assert [[f.grid for f in fa[n]] for n in fa] == [[f.grid for f in fb[n]] for n in fb]
    assert a.state_dict().keys() == b.state_dict().keys()
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=0)
    va, vb = a.visual(images), b.visual(images)
    assert va.grids == vb.grids == list(point_cost(mapping).groups) == list(point_cost(name).groups)
    torch.testing.assert_close(va.tokens, vb.tokens, rtol=0, atol=0)
