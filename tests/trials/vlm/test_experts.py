"""Experts, layer merges and token reduction, over every preset (real HF classes, tiny configs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from search_space.components import MERGES
from search_space.cost import expert_grid
from search_space.point import ExpertConfig
from search_space.presets import FAMILIES, PRESETS, expert_info
from trials.vlm.experts import ADAPTERS, Expert, ExpertTokens, out_width
from trials.vlm.reduce import (
    MERGE_MODULES,
    Features,
    adaptive_pool,
    pixel_unshuffle_tokens,
    resize_grid,
)

PRESET_NAMES = PRESETS.names()
MERGE_NAMES = MERGES.names()


def all_layers(name: str) -> tuple[int, ...]:
    return tuple(range(PRESETS.get(name).num_layers + 1))


def merged_layers(name: str, merge: str) -> tuple[int, ...]:
    """Embeddings, first block, last block; `mean` keeps the layers as wide as the first."""
    info, layers = PRESETS.get(name), (0, 1, -1)
    if merge == "mean":
        layers = tuple(i for i in layers if info.layer_width(i) == info.layer_width(layers[0]))
    return layers


def check_pipeline(cfg: ExpertConfig, images: torch.Tensor) -> Features:
    module = ExpertTokens(cfg)
    out = module(images)
    h, w = out.grid
    assert out.grid == expert_grid(cfg)
    assert out.tokens.shape == (images.shape[0], h * w, out_width(cfg))
    assert module.out_width == out_width(cfg)
    return out


def test_registries_match_search_space() -> None:
    assert sorted(MERGE_MODULES.names()) == sorted(MERGES.names())
    assert sorted(ADAPTERS.names()) == sorted(FAMILIES.names())
    with pytest.raises(KeyError, match="did you mean 'layerscale'"):
        MERGE_MODULES.get("layerscal")


@pytest.mark.parametrize("tokens", [None, 4])
@pytest.mark.parametrize("layer", [0, 1, -1])
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_single_layer_grid(name: str, layer: int, tokens: int | None, images: torch.Tensor) -> None:
    check_pipeline(ExpertConfig(source=name, layers=layer, tokens=tokens), images)


@pytest.mark.parametrize("tokens", [None, 4])
@pytest.mark.parametrize("merge", MERGE_NAMES)
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_merged_layers_grid(name: str, merge: str, tokens: int | None, images: torch.Tensor) -> None:
    layers = merged_layers(name, merge)
    check_pipeline(ExpertConfig(source=name, layers=layers, merge=merge, tokens=tokens), images)


@pytest.mark.parametrize("tokens", [None, 36])
@pytest.mark.parametrize("merge", MERGE_NAMES)
def test_merge_grid_largest(merge: str, tokens: int | None, images: torch.Tensor) -> None:
    """tiny-convnext stages 1-3 (24x24 x 16, 12x12 x 32, 6x6 x 64; `mean`: hidden states 0-1,
    both 24x24 x 16) meet at the largest grid (`tokens` still wins), the cost model's grid. The
    cached part keeps each stage at its own grid; the merge resizes the smaller ones up."""
    layers = (0, 1) if merge == "mean" else (1, 2, 3)
    cfg = ExpertConfig(source="tiny-convnext", layers=layers, merge=merge, merge_grid="largest",
                       tokens=tokens)
    assert check_pipeline(cfg, images).grid == ((24, 24) if tokens is None else (6, 6))
    native = [PRESETS.get("tiny-convnext").grid(i) for i in layers]
    cached = [f.grid for f in ExpertTokens(cfg).features(images)]
    assert cached == (native if tokens is None else [(6, 6)] * len(layers))


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_layer_is_read(name: str, images: torch.Tensor) -> None:
    info = PRESETS.get(name)
    feats = Expert(ExpertConfig(source=name, layers=all_layers(name)))(images)
    assert [f.grid for f in feats] == [info.grid(i) for i in all_layers(name)]
    assert [f.width for f in feats] == [info.layer_width(i) for i in all_layers(name)]


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_only_the_merge_trains(name: str, images: torch.Tensor) -> None:
    module = ExpertTokens(ExpertConfig(source=name, layers=(0, 1, -1), merge="layerscale"))
    module.train()
    assert not module.expert.model.training
    module(images).tokens.square().mean().backward()
    for param in module.expert.parameters():
        assert not param.requires_grad and param.grad is None
    grads = [p.grad for p in module.merge.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert module.merge.logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_are_deterministic(name: str, images: torch.Tensor) -> None:
    cfg = ExpertConfig(source=name, layers=(0, -1))
    state = torch.get_rng_state()
    first, second = Expert(cfg), Expert(cfg)
    assert torch.equal(state, torch.get_rng_state())  # building leaves the global RNG alone
    assert first.identity == second.identity and name in first.identity
    for a, b in zip(first(images), second(images), strict=True):
        assert a.grid == b.grid and torch.equal(a.tokens, b.tokens)
    assert torch.equal(first(images)[-1].tokens, first(images)[-1].tokens)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_save_and_load_through_directory(name: str, images: torch.Tensor, tmp_path: Path) -> None:
    layers = all_layers(name)
    preset = Expert(ExpertConfig(source=name, layers=layers))
    preset.model.save_pretrained(tmp_path)
    loaded = Expert(ExpertConfig(source=str(tmp_path), layers=layers))
    assert loaded.identity.startswith("checkpoint:") and str(tmp_path) in loaded.identity
    for a, b in zip(preset(images), loaded(images), strict=True):
        assert a.grid == b.grid
        torch.testing.assert_close(a.tokens, b.tokens, atol=1e-6, rtol=0)
    info, saved = PRESETS.get(name), expert_info(str(tmp_path))
    assert saved is not None and saved.family == info.family
    assert (saved.num_layers, saved.image_size) == (info.num_layers, info.image_size)
    assert [saved.grid(i) for i in layers] == [info.grid(i) for i in layers]
    assert [saved.layer_width(i) for i in layers] == [info.layer_width(i) for i in layers]
    cfg = ExpertConfig(source=str(tmp_path), layers=(0, -1), merge="concat", tokens=4)
    check_pipeline(cfg, images)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_other_image_size(name: str, images: torch.Tensor) -> None:
    """ViTs interpolate position embeddings; a SAM preset is built at the asked size."""
    size = 80 if PRESETS.get(name).image_size != 80 else 64
    for layer in (0, -1):
        cfg = ExpertConfig(source=name, layers=layer, image_size=size)
        assert check_pipeline(cfg, images).grid == PRESETS.get(name).grid(layer, size)


def test_fixed_size_checkpoint_refuses_other_sizes(tmp_path: Path) -> None:
    Expert(ExpertConfig(source="tiny-sam")).model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="takes 128px input only"):
        Expert(ExpertConfig(source=str(tmp_path), image_size=96))


def test_mae_keeps_every_token_in_order(images: torch.Tensor) -> None:
    expert = Expert(ExpertConfig(source="tiny-mae", layers=0))
    embeddings = expert.model.embeddings
    with torch.no_grad():
        patches = embeddings.patch_embeddings(expert.preprocess(images))  # (B, N, C)
        expected = patches + embeddings.position_embeddings[:, 1:]
    torch.testing.assert_close(expert(images)[0].tokens, expected)


@pytest.mark.parametrize(("family", "mean", "std"), [
    ("tiny-clip", (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ("tiny-siglip", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ("tiny-dinov2", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
])
def test_preprocess_resizes_and_normalises(family: str, mean: tuple, std: tuple) -> None:
    expert = Expert(ExpertConfig(source=family))
    images = torch.full((1, 3, 50, 30), 200, dtype=torch.uint8)
    pixels = expert.preprocess(images)
    side = PRESETS.get(family).image_size
    assert pixels.shape == (1, 3, side, side)
    expected = (200 / 255 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(pixels[0, :, side // 2, side // 2], expected)
    with pytest.raises(TypeError, match="uint8"):
        expert.preprocess(images.float())


def test_bad_layers_and_widths_are_reported() -> None:
    with pytest.raises(ValueError, match="layer 5 is beyond tiny-clip's depth"):
        Expert(ExpertConfig(source="tiny-clip", layers=5))
    with pytest.raises(ValueError, match="merge 'mean' needs layers of one width"):
        ExpertTokens(ExpertConfig(source="tiny-convnext", layers=(1, -1), merge="mean"))


@pytest.mark.parametrize(("model_class", "config"), [
    ("ViTModel", transformers.ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=32, patch_size=8)),
    ("Dinov2WithRegistersModel", transformers.Dinov2WithRegistersConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=56, patch_size=14, num_register_tokens=2)),
])
def test_generic_family_drops_prefix_tokens(model_class: str, config: transformers.PretrainedConfig,
                                            images: torch.Tensor, tmp_path: Path) -> None:
    getattr(transformers, model_class)(config).save_pretrained(tmp_path)
    cfg = ExpertConfig(source=str(tmp_path), layers=(0, -1), merge="layerscale")
    side = config.image_size // config.patch_size
    assert Expert(cfg).info.family == "generic"
    assert check_pipeline(cfg, images).grid == (side, side)


def test_pixel_unshuffle_channel_order() -> None:
    # a 4x4 grid whose token (r, c) holds channels [10 * (4r + c), 10 * (4r + c) + 1]
    ids = torch.arange(16).view(1, 16, 1) * 10
    tokens = torch.cat([ids, ids + 1], dim=-1)  # (1, 16, 2)
    out, grid = pixel_unshuffle_tokens(tokens, (4, 4), 2)
    assert grid == (2, 2) and out.shape == (1, 4, 8)
    # output token (0, 1): window rows 0-1, cols 2-3 -> r0c0 = 2, r0c1 = 3, r1c0 = 6, r1c1 = 7
    assert out[0, 1].tolist() == [20, 21, 30, 31, 60, 61, 70, 71]
    assert out[0, 0].tolist() == [0, 1, 10, 11, 40, 41, 50, 51]
    with pytest.raises(ValueError, match="divisible"):
        pixel_unshuffle_tokens(tokens, (4, 4), 3)


def test_adaptive_pool_and_resize_grid() -> None:
    tokens = torch.arange(16.0).view(1, 16, 1)  # a 4x4 grid, values 0..15 row-major
    pooled = adaptive_pool(tokens, (4, 4), (2, 2))
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert adaptive_pool(tokens, (4, 4), (4, 4)) is tokens
    corners = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 4, 1)  # a 2x2 grid
    resized = resize_grid(corners, (2, 2), (3, 3)).flatten().tolist()
    assert resized == [0.0, 0.5, 1.0, 1.0, 1.5, 2.0, 2.0, 2.5, 3.0]  # align_corners keeps corners
