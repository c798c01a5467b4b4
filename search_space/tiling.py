"""Dynamic tiling of an expert's input (YAML `tiling:` on an expert), torch-free.

Two schemes, each choosing the tile layout as its official code does (REFERENCE.md, "Tiling"):

- `dynamic` (InternVL / LEO, Mozhgan91/LEO d2787c6 leo_chat/leo/train/dataset.py
  `dynamic_preprocess`, `find_closest_aspect_ratio`): the layouts (cols, rows) with
  cols * rows <= max_tiles, the one closest in aspect ratio to the image (ties: the larger when
  the image's area exceeds half the layout's); the image resized to (cols * t, rows * t) and cut
  into t x t tiles, row-major; a thumbnail (the whole image at t x t) LAST when there is more
  than one tile (`use_thumbnail and len(processed_images) != 1`). Each tile's tokens follow the
  previous tile's in the sequence, no newline: one group per tile (and thumbnail).
- `anyres` (LLaVA-NeXT, LLaVA-VL/LLaVA-NeXT df17966 llava/mm_utils.py `select_best_resolution`,
  `process_anyres_image`, `resize_and_pad_image`, `divide_to_patches`; llava/model/llava_arch.py
  `unpad_image` and the `spatial_unpad` merge): the pinpoints (i * t, j * t) for i, j >= 1 with
  i * j <= max_tiles (LLaVA-NeXT's "(1x1),...,(nxn)" range order, bounded by the tile count), the
  best resolution (most effective pixels, then least waste); the image resized into it keeping
  its aspect and padded (black, centred), cut into t x t tiles. The base image (the whole image
  at t x t: `thumbnail`) comes FIRST as its own group; the tiles' maps are merged into one
  (rows * h) x (cols * w) grid, unpadded as `unpad_image` does, and with `newline` the learned
  `image_newline` is appended after every row: a (H, W + 1) grid, as sva's newline.

The images a trial sees are one square size (`data.image_size`, `trials.vlm.processing`), so the
layout is a function of that size, the tile side and max_tiles: every sample has the same tokens
and `visual_tokens` / `positions_used` stay analytic. The expert runs on each tile (and the
thumbnail), each at its own input side; the whole fusion runs per tile (every expert of a tiled
design tiles alike), and `TileLayout.groups` turns one tile's fused groups into the LM's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from search_space.numbers import PositiveInt

Grid = tuple[int, int]
TileScheme = Literal["dynamic", "anyres"]


class TilingConfig(BaseModel):
    """`tiling: {max_tiles, tile_size, thumbnail, newline}` of an expert (`scheme`: dynamic, as
    InternVL / LEO; anyres, as LLaVA-NeXT)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    scheme: TileScheme = "dynamic"
    max_tiles: PositiveInt = 6                  # LEO's max_dynamic_patch
    tile_size: Annotated[int, Field(ge=16, le=4096)] | None = None  # null: the expert's input side
    thumbnail: bool = True                      # dynamic: thumbnail last; anyres: the base first
    newline: bool = False                       # anyres: image_newline after every merged row

    @model_validator(mode="after")
    def _newline_is_anyres(self) -> TilingConfig:
        if self.newline and self.scheme != "anyres":
            raise ValueError("tiling.newline is LLaVA-NeXT's image_newline after each row of the merged "
                             "tiles; set scheme: anyres, or newline: false (dynamic tiles are "
                             "concatenated in sequence)")
        return self


# ---- the official layout rules, restated ------------------------------------------------------


def dynamic_ratios(max_tiles: int, min_tiles: int = 1) -> list[Grid]:
    """InternVL's target_ratios: (i, j) with min <= i * j <= max, sorted by i * j (stable)."""
    ratios = {(i, j) for n in range(min_tiles, max_tiles + 1) for i in range(1, n + 1)
              for j in range(1, n + 1) if min_tiles <= i * j <= max_tiles}
    return sorted(ratios, key=lambda r: r[0] * r[1])


def closest_aspect_ratio(aspect: float, ratios: Sequence[Grid], width: int, height: int,
                         tile: int) -> Grid:
    """InternVL's find_closest_aspect_ratio: (cols, rows)."""
    best_diff, best = float("inf"), (1, 1)
    area = width * height
    for ratio in ratios:
        diff = abs(aspect - ratio[0] / ratio[1])
        if diff < best_diff:
            best_diff, best = diff, ratio
        elif diff == best_diff and area > 0.5 * tile * tile * ratio[0] * ratio[1]:
            best = ratio
    return best


def anyres_pinpoints(max_tiles: int, tile: int) -> list[Grid]:
    """(width, height) resolutions: LLaVA-NeXT's range order, i * j <= max_tiles."""
    return [(i * tile, j * tile) for i in range(1, max_tiles + 1) for j in range(1, max_tiles + 1)
            if i * j <= max_tiles]


def best_resolution(size: Grid, resolutions: Sequence[Grid]) -> Grid:
    """LLaVA-NeXT's select_best_resolution: `size` and the answer are (width, height)."""
    width0, height0 = size
    best, best_effective, best_waste = resolutions[0], 0, float("inf")
    for width, height in resolutions:
        scale = min(width / width0, height / height0)
        effective = min(int(width0 * scale) * int(height0 * scale), width0 * height0)
        waste = width * height - effective
        if effective > best_effective or (effective == best_effective and waste < best_waste):
            best, best_effective, best_waste = (width, height), effective, waste
    return best


def fitted_size(size: Grid, target: Grid) -> Grid:
    """(width, height) the image is resized to inside `target` (LLaVA-NeXT resize_and_pad_image)."""
    (width0, height0), (width, height) = size, target
    scale_w, scale_h = width / width0, height / height0
    if scale_w < scale_h:
        return width, min(math.ceil(height0 * scale_w), height)
    return min(math.ceil(width0 * scale_h), width), height


def unpad_bounds(grid: Grid, size: Grid) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of LLaVA-NeXT's unpad_image on a (height, width) `grid` of an
    image of `size` (width, height)."""
    (height, width), (width0, height0) = grid, size
    if width0 / height0 > width / height:
        new_height = int(height0 * (width / width0))
        pad = (height - new_height) // 2
        return pad, height - pad, 0, width
    new_width = int(width0 * (height / height0))
    pad = (width - new_width) // 2
    return 0, height, pad, width - pad


# ---- the layout of a design --------------------------------------------------------------------


@dataclass(frozen=True)
class TileLayout:
    """How a square image of `image_size` is tiled: `cols` x `rows` tiles of `tile_size`."""

    scheme: TileScheme
    cols: int
    rows: int
    tile_size: int
    image_size: int
    thumbnail: bool  # a thumbnail / base image is among the images
    newline: bool

    @property
    def tiles(self) -> int:
        return self.cols * self.rows

    @property
    def images(self) -> int:
        """Images the expert runs on per sample (tiles + thumbnail)."""
        return self.tiles + self.thumbnail

    @property
    def thumbnail_first(self) -> bool:
        return self.scheme == "anyres"  # LLaVA-NeXT's base first; InternVL's thumbnail last

    def key(self) -> str:
        """What the cached features depend on."""
        return (f"{self.scheme}:{self.cols}x{self.rows}@{self.tile_size}/{self.image_size}"
                f"{'+thumbnail' if self.thumbnail else ''}")

    def merged_bounds(self, tile: Grid) -> tuple[int, int, int, int]:
        """anyres: the unpadded window (top, bottom, left, right) of the merged tile grid."""
        merged = (self.rows * tile[0], self.cols * tile[1])
        return unpad_bounds(merged, (self.image_size, self.image_size))

    def groups(self, per_tile: Sequence[Grid]) -> list[Grid]:
        """The LM's groups from one tile's fused groups (every image gives the same grids)."""
        tiles = list(per_tile)
        if self.scheme == "dynamic":
            return tiles * self.tiles + (tiles if self.thumbnail else [])
        merged = []
        for grid in tiles:
            top, bottom, left, right = self.merged_bounds(grid)
            merged.append((bottom - top, right - left + self.newline))
        return (tiles if self.thumbnail else []) + merged


def tile_layout(cfg: TilingConfig, image_size: int, tile_size: int) -> TileLayout:
    """The layout the scheme's official code picks for a square image of `image_size`."""
    if cfg.scheme == "dynamic":
        cols, rows = closest_aspect_ratio(1.0, dynamic_ratios(cfg.max_tiles), image_size, image_size,
                                          tile_size)
        thumbnail = cfg.thumbnail and cols * rows != 1
    else:
        width, height = best_resolution((image_size, image_size), anyres_pinpoints(cfg.max_tiles, tile_size))
        cols, rows = width // tile_size, height // tile_size
        thumbnail = cfg.thumbnail
    return TileLayout(cfg.scheme, cols, rows, tile_size, image_size, thumbnail, cfg.newline)
