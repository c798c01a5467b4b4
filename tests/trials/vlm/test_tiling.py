"""A tiled design built: its tiles, the LM's groups against the cost model, one training step,
cached = live, LLaVA-NeXT's spatial merge, and the feature cache's key.

The merge reference restates LLaVA-VL/LLaVA-NeXT @ df179663ae8b83207df100a1f7af24caec633ff9,
llava/model/llava_arch.py (the `spatial_unpad` branch of prepare_inputs_labels_for_multimodal:
view(rows, cols, h, w, C), permute(4, 0, 2, 1, 3), unpad_image, image_newline per row, base
first); the tile order Mozhgan91/LEO @ d2787c646e931041b08635f23f722db6e077203b,
leo_chat/leo/train/dataset.py `dynamic_preprocess` (row-major crops, thumbnail last).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from search_space import TrialConfig, point_cost
from search_space.components import POSITIONS
from search_space.tiling import TileLayout, TilingConfig, tile_layout, unpad_bounds
from trials.cache import cache_key
from trials.vlm.model import build_vlm
from trials.vlm.reduce import Features
from trials.vlm.tiling import TileMerge, fold, tile_images, unfold

QUESTIONS = ["what color is the object ?", "how many objects are there ?"]
ANSWERS = ["red", "3"]


def point(tiling: dict, kind: str = "sequence_concat", positions: str = "original",
          **fusion: object) -> TrialConfig:
    """64 px images, 32 px tiles: clip 4x4 -> 2x2 per tile, dinov2 2x2 per tile."""
    tiling = {"tile_size": 32, **tiling}
    return TrialConfig.model_validate({
        "name": "t", "data": {"image_size": 64}, "positions": positions,
        "experts": {"clip": {"source": "tiny-clip", "image_size": 32, "tokens": 4, "tiling": tiling},
                    "dinov2": {"source": "tiny-dinov2", "image_size": 28, "tiling": tiling}},
        "fusion": {"kind": kind, **fusion}, "language_model": {"train": "frozen"}})


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


DESIGNS = [({"max_tiles": 4}, "sequence_concat", {}),
           ({"max_tiles": 4}, "sequence_concat", {"interleave": True}),
           ({"max_tiles": 4}, "mr_adapter", {}),
           ({"scheme": "anyres", "max_tiles": 4, "newline": True}, "sequence_concat", {}),
           ({"scheme": "anyres", "max_tiles": 2, "newline": True}, "channel_concat", {}),
           ({"scheme": "anyres", "max_tiles": 4, "thumbnail": False}, "resampler", {"queries": 4})]


@pytest.mark.parametrize(("tiling", "kind", "fusion"), DESIGNS)
def test_tiled_vlm_equals_cost_model_and_trains(tiling: dict, kind: str, fusion: dict,
                                                images: torch.Tensor) -> None:
    torch.manual_seed(0)
    vlm = build_vlm(point(tiling, kind, **fusion))
    visual = vlm.visual(images)
    for scheme in POSITIONS.names():
        cost = point_cost(point(tiling, kind, scheme, **fusion))
        assert visual.grids == list(cost.groups)
        assert visual.tokens.shape == (2, cost.visual_tokens, vlm.d_model)
        vlm.point = point(tiling, kind, scheme, **fusion)
        assert vlm.visual_cost() == (cost.visual_tokens, cost.positions_used)
    assert point_cost(vlm.point).visual_tokens > point_cost(vlm.point.model_copy(update={
        "experts": {n: c.model_copy(update={"tiling": None}) for n, c in vlm.point.experts.items()}
    })).visual_tokens  # the tiles add tokens
    params = vlm.trainable_parts["connector"]
    optimizer = torch.optim.SGD(params, lr=0.1)
    before = [p.detach().clone() for p in params]
    loss = vlm(**vlm.encode(QUESTIONS, ANSWERS), images=images)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in params)
    assert any(not torch.equal(a, p) for a, p in zip(before, params, strict=True))
    if vlm.tiles is not None and vlm.tiles.newline is not None:
        assert any(p is vlm.tiles.newline for p in params)  # image_newline trains with the connector


def test_dynamic_tiles_are_crops_of_the_resized_image_thumbnail_last(images: torch.Tensor) -> None:
    layout = tile_layout(TilingConfig(max_tiles=4), 64, 32)
    tiles = tile_images(images, layout).view(2, layout.images, 3, 32, 32)
    assert (layout.cols, layout.rows, layout.images) == (2, 2, 5)
    x = images.float()
    for r in range(2):
        for c in range(2):  # image.resize((64, 64)) is the image itself: crop box (c*32, r*32)
            assert torch.equal(tiles[:, 2 * r + c], images[..., r * 32:(r + 1) * 32, c * 32:(c + 1) * 32])
    thumb = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(tiles[:, 4], thumb.round().clamp(0, 255).to(torch.uint8))


def test_anyres_tiles_pad_black_base_first(images: torch.Tensor) -> None:
    """A square image in a 2 x 1 layout (as LLaVA-v1.6's pinpoints give small images; ours, all
    i x j <= max_tiles, pick k x k for a square one): resized to 32 x 32 and centred in 64 x 32
    with 16 px black bands either side (resize_and_pad_image), the base first."""
    layout = TileLayout("anyres", cols=2, rows=1, tile_size=32, image_size=64, thumbnail=True, newline=False)
    tiles = tile_images(images, layout).view(2, 3, 3, 32, 32)
    canvas = torch.cat([tiles[:, 1], tiles[:, 2]], dim=-1)  # (2, 3, 32, 64), row-major tiles
    fitted = F.interpolate(images.float(), size=(32, 32), mode="bilinear", antialias=True,
                           align_corners=False).round().clamp(0, 255).to(torch.uint8)
    assert int(canvas[..., :16].sum()) == 0 and int(canvas[..., 48:].sum()) == 0
    assert torch.equal(canvas[..., 16:48], fitted)
    assert torch.equal(tiles[:, 0], fitted)  # the base: the whole image at the tile side
    assert tile_layout(TilingConfig(scheme="anyres", max_tiles=6), 72, 32).cols == 2  # 2 x 2 here


def llava_next_merge(image_feature: torch.Tensor, rows: int, cols: int, side: int, size: int,
                     newline: torch.Tensor) -> torch.Tensor:
    """llava_arch.py, spatial_unpad: image_feature (1 + rows*cols, h*w, C) -> (N, C)."""
    base_image_feature = image_feature[0]
    image_feature = image_feature[1:]
    height = width = side
    image_feature = image_feature.view(rows, cols, height, width, -1)
    image_feature = image_feature.permute(4, 0, 2, 1, 3).contiguous()
    image_feature = image_feature.flatten(1, 2).flatten(2, 3)
    top, bottom, left, right = unpad_bounds(tuple(image_feature.shape[1:]), (size, size))  # unpad_image
    image_feature = image_feature[:, top:bottom, left:right]
    image_feature = torch.cat((image_feature, newline[:, None, None].expand(*image_feature.shape[:-1], 1)),
                              dim=-1)
    image_feature = image_feature.flatten(1, 2).transpose(0, 1)
    return torch.cat((base_image_feature, image_feature), dim=0)


@pytest.mark.parametrize(("size", "max_tiles"), [(64, 4), (40, 2), (72, 6)])
def test_anyres_merge_equals_llava_next(size: int, max_tiles: int) -> None:
    layout = tile_layout(TilingConfig(scheme="anyres", max_tiles=max_tiles, newline=True), size, 16)
    merge = TileMerge(layout, 8)
    feats = torch.randn(3 * layout.images, 4 * 4, 8)  # 3 samples, each image's 4x4 map
    (base, merged) = merge([Features(feats, (4, 4))])
    for b in range(3):
        ref = llava_next_merge(feats.view(3, layout.images, 16, 8)[b], layout.rows, layout.cols, 4, size,
                               merge.newline.detach())
        assert torch.equal(torch.cat([base.tokens[b], merged.tokens[b]]), ref)


def test_fold_keeps_a_sample_per_row_and_unfolds_back() -> None:
    layers = [Features(torch.randn(2 * 5, 4, 3), (2, 2))]
    folded = fold(layers, 5)
    assert folded[0].tokens.shape == (2, 20, 3) and folded[0].grid == (10, 2)
    assert torch.equal(folded[0].tokens[1, 4:8], layers[0].tokens[6])  # sample 1, its tile 1
    back = unfold(folded, 5)[0]
    assert torch.equal(back.tokens, layers[0].tokens) and back.grid == (2, 2)


def test_cached_features_give_the_live_tokens(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    vlm = build_vlm(point({"scheme": "anyres", "max_tiles": 4, "newline": True}))
    cached = vlm.expert_features(images)
    assert cached["clip"][0].tokens.shape[:2] == (2, 5 * 4)  # 5 images of 2x2, one row a sample
    assert torch.equal(vlm.visual(features=cached).tokens, vlm.visual(images).tokens)


def test_cache_key_names_the_tile_layout() -> None:
    base = cache_key("preset:tiny-clip@1", 32, (-1,), 4, "data")
    dynamic = tile_layout(TilingConfig(max_tiles=4), 64, 32).key()
    anyres = tile_layout(TilingConfig(scheme="anyres", max_tiles=4), 64, 32).key()
    fewer = tile_layout(TilingConfig(max_tiles=4, thumbnail=False), 64, 32).key()
    keys = {cache_key("preset:tiny-clip@1", 32, (-1,), 4, "data", tiling=t) for t in (dynamic, anyres, fewer)}
    assert len(keys) == 3 and base not in keys
    assert base == cache_key("preset:tiny-clip@1", 32, (-1,), 4, "data", tiling=None)  # older keys stand
