"""Tile layouts (`tiling:` on an expert) against the official code, and their analytic cost.

References, restated below from the official files (PIL images replaced by (width, height)):
- Mozhgan91/LEO @ d2787c646e931041b08635f23f722db6e077203b, leo_chat/leo/train/dataset.py:
  `find_closest_aspect_ratio`, `dynamic_preprocess` (InternVL's; LEO's script leo_8b_full.sh runs
  it with --max_dynamic_patch 6 --use_thumbnail True --force_image_size 448).
- LLaVA-VL/LLaVA-NeXT @ df179663ae8b83207df100a1f7af24caec633ff9, llava/mm_utils.py:
  `select_best_resolution`, `get_anyres_image_grid_shape` (its "(1x1),...,(nxn)" range form),
  `resize_and_pad_image`; llava/model/llava_arch.py: `unpad_image`.
"""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from search_space import TrialConfig, compile_space, parse, point_cost
from search_space.cost import fusion_plan, space_cost_range
from search_space.errors import InvalidDesign
from search_space.tiling import TilingConfig, fitted_size, tile_layout, unpad_bounds

# ---- InternVL / LEO (dataset.py), as written there -----------------------------------------------

def official_find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in target_ratios:
        target_aspect_ratio = ratio[0] / ratio[1]
        ratio_diff = abs(aspect_ratio - target_aspect_ratio)
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff:  # noqa: SIM102 - as written there
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


def official_dynamic_preprocess(size, min_num=1, max_num=6, image_size=448, use_thumbnail=False):
    """The number of images and the crop boxes dynamic_preprocess makes for an image of `size`."""
    orig_width, orig_height = size
    aspect_ratio = orig_width / orig_height
    target_ratios = set(
        (i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1) if
        i * j <= max_num and i * j >= min_num)
    target_ratios = sorted(target_ratios, key=lambda x: x[0] * x[1])
    target_aspect_ratio = official_find_closest_aspect_ratio(
        aspect_ratio, target_ratios, orig_width, orig_height, image_size)
    target_width = image_size * target_aspect_ratio[0]
    blocks = target_aspect_ratio[0] * target_aspect_ratio[1]
    boxes = []
    for i in range(blocks):
        boxes.append(((i % (target_width // image_size)) * image_size,
                      (i // (target_width // image_size)) * image_size))
    images = blocks + (1 if use_thumbnail and blocks != 1 else 0)
    return target_aspect_ratio, images, boxes


# ---- LLaVA-NeXT (mm_utils.py, llava_arch.py), as written there ----------------------------------

def official_select_best_resolution(original_size, possible_resolutions):
    original_width, original_height = original_size
    best_fit = None
    max_effective_resolution = 0
    min_wasted_resolution = float("inf")
    for width, height in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
        effective_resolution = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted_resolution = (width * height) - effective_resolution
        if effective_resolution > max_effective_resolution or (
                effective_resolution == max_effective_resolution
                and wasted_resolution < min_wasted_resolution):
            max_effective_resolution = effective_resolution
            min_wasted_resolution = wasted_resolution
            best_fit = (width, height)
    return best_fit


def official_grid_shape(image_size, range_end, patch_size, max_tiles):
    """get_anyres_image_grid_shape with grid_pinpoints "(1x1),...,(nxn)", the tiles bounded."""
    grid_pinpoints = [(i, j) for i in range(1, range_end + 1) for j in range(1, range_end + 1)]
    grid_pinpoints = [[dim * patch_size for dim in pair] for pair in grid_pinpoints
                      if pair[0] * pair[1] <= max_tiles]
    width, height = official_select_best_resolution(image_size, grid_pinpoints)
    return width // patch_size, height // patch_size


def official_unpad(current_height, current_width, original_size):
    """unpad_image's slice bounds (top, bottom, left, right) of a C x H x W tensor."""
    original_width, original_height = original_size
    original_aspect_ratio = original_width / original_height
    current_aspect_ratio = current_width / current_height
    if original_aspect_ratio > current_aspect_ratio:
        scale_factor = current_width / original_width
        new_height = int(original_height * scale_factor)
        padding = (current_height - new_height) // 2
        return padding, current_height - padding, 0, current_width
    scale_factor = current_height / original_height
    new_width = int(original_width * scale_factor)
    padding = (current_width - new_width) // 2
    return 0, current_height, padding, current_width - padding


def official_resize_and_pad(original_size, target_resolution):
    original_width, original_height = original_size
    target_width, target_height = target_resolution
    scale_w = target_width / original_width
    scale_h = target_height / original_height
    if scale_w < scale_h:
        new_width = target_width
        new_height = min(math.ceil(original_height * scale_w), target_height)
    else:
        new_height = target_height
        new_width = min(math.ceil(original_width * scale_h), target_width)
    return new_width, new_height


SIZES = [96, 336, 447, 448, 633, 634, 672, 896, 1024, 1344, 2000]


@pytest.mark.parametrize("max_tiles", [1, 2, 4, 6, 9, 12])
@pytest.mark.parametrize("tile", [224, 336, 448])
def test_dynamic_layout_is_internvl_s(max_tiles: int, tile: int) -> None:
    for size in SIZES:
        ratio, images, boxes = official_dynamic_preprocess((size, size), 1, max_tiles, tile, True)
        layout = tile_layout(TilingConfig(max_tiles=max_tiles), size, tile)
        assert (layout.cols, layout.rows) == ratio
        assert layout.images == images  # the thumbnail only with more than one tile
        ours = [(c * tile, r * tile) for r in range(layout.rows) for c in range(layout.cols)]
        assert ours == boxes  # row-major tiles


def test_dynamic_square_layouts_at_leo_s_setting() -> None:
    """448 px tiles, 6 at most: a square image is 1 tile up to 633 px, else 2 x 2 + thumbnail."""
    cfg = TilingConfig(max_tiles=6)
    layouts = [tile_layout(cfg, s, 448) for s in (448, 633, 634, 1024)]
    assert [(lay.tiles, lay.images) for lay in layouts] == [(1, 1), (1, 1), (4, 5), (4, 5)]


@pytest.mark.parametrize("max_tiles", [1, 2, 3, 4, 6, 9])
@pytest.mark.parametrize("tile", [224, 336, 384])
def test_anyres_layout_and_unpad_are_llava_next_s(max_tiles: int, tile: int) -> None:
    for size in SIZES:
        layout = tile_layout(TilingConfig(scheme="anyres", max_tiles=max_tiles), size, tile)
        assert (layout.cols, layout.rows) == official_grid_shape((size, size), max_tiles, tile, max_tiles)
        target = (layout.cols * tile, layout.rows * tile)
        assert fitted_size((size, size), target) == official_resize_and_pad((size, size), target)
        for h, w in [(layout.rows * 24, layout.cols * 24), (layout.rows * 7, layout.cols * 5)]:
            assert unpad_bounds((h, w), (size, size)) == official_unpad(h, w, (size, size))


def point(tiling: dict | None, kind: str = "sequence_concat", positions: str = "original",
          image_size: int = 64, **fusion: object) -> TrialConfig:
    experts = {"clip": {"source": "tiny-clip", "image_size": 32, "tokens": 4},
               "dinov2": {"source": "tiny-dinov2", "image_size": 28}}
    if tiling is not None:
        experts["clip"]["tiling"] = {"tile_size": 32, **tiling}
        experts["dinov2"]["tiling"] = {"tile_size": 32, **tiling}
    return TrialConfig.model_validate({"data": {"image_size": image_size}, "experts": experts,
                                       "fusion": {"kind": kind, **fusion}, "positions": positions})


def test_dynamic_groups_one_per_tile_thumbnail_last() -> None:
    """64 px images, 32 px tiles: 2 x 2 tiles + thumbnail, each clip 2x2 then dinov2 2x2."""
    untiled = point_cost(point(None))
    tiled = point_cost(point({"max_tiles": 4}))
    assert untiled.groups == ((2, 2), (2, 2))
    assert tiled.groups == untiled.groups * 5
    assert tiled.visual_tokens == 5 * untiled.visual_tokens
    interleaved = point_cost(point({"max_tiles": 4}, interleave=True))
    assert interleaved.groups == ((2, 4),) * 5  # LEO: interleaved within each tile


def test_anyres_base_first_then_merged_grid_with_newline() -> None:
    """anyres at 64 px, 32 px tiles, 4 at most: 2 x 2 tiles; the base, then 4x4 (+ a newline)."""
    cost = point_cost(point({"scheme": "anyres", "max_tiles": 4, "newline": True}))
    assert cost.groups == ((2, 2), (2, 2), (4, 5), (4, 5))
    assert cost.positions_used == cost.visual_tokens == 8 + 40
    row = point_cost(point({"scheme": "anyres", "max_tiles": 4, "thumbnail": False},
                           positions="share_by_row"))
    assert row.groups == ((4, 4), (4, 4)) and row.visual_tokens == 32


def test_mixed_tiling_is_refused_with_the_fix() -> None:
    p = point({"max_tiles": 4})
    other = p.experts["dinov2"].model_copy(update={"tiling": None})
    mixed = p.model_copy(update={"experts": {"clip": p.experts["clip"], "dinov2": other}})
    with pytest.raises(InvalidDesign, match="same `tiling`"):
        point_cost(mixed)
    wider = p.experts["dinov2"].model_copy(update={"tiling": TilingConfig(max_tiles=4)})  # tile 28 px
    with pytest.raises(InvalidDesign, match="tile_size included"):
        fusion_plan(p.model_copy(update={"experts": {"clip": p.experts["clip"], "dinov2": wider}}))


def test_newline_needs_anyres_and_hash_stands() -> None:
    with pytest.raises(ValidationError, match="set scheme: anyres"):
        TilingConfig(newline=True)
    assert "tiling" not in point(None).canonical()["experts"]["clip"]
    assert point({"max_tiles": 4}).config_hash != point(None).config_hash


def test_space_range_knows_the_tiles() -> None:
    """A space whose pool tiles (or not, as a choice) ranges over both costs."""
    text = """
name: s
data: {image_size: 64}
experts:
  pool:
    clip: {source: tiny-clip, image_size: 32, tokens: 4,
           tiling: {choices: [null, {max_tiles: 4, tile_size: 32}]}}
fusion: {kind: sequence_concat}
"""
    compiled = compile_space(parse(text).space)
    assert space_cost_range(compiled).tokens == (4, 20)  # 1 image of 2x2, or 5
