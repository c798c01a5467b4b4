"""Tiles of the images, and the LM's groups from the per-tile fused groups (`search_space.tiling`).

A tiled design runs every expert on B * T images (each sample's T = tiles + thumbnail, in the
scheme's order) and its fusion on each of them; `TileMerge` then gives the LM the groups
`TileLayout.groups` names: InternVL / LEO one group per tile, thumbnail last; LLaVA-NeXT the base
first, then the tiles merged into one unpadded grid, `image_newline` after every row.
The feature cache stores a tiled expert's layers folded per sample ((B, T * n, C) on a
(T * h, w) grid, tile after tile), so a sample stays one cache row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space import TileLayout, fitted_size
from trials.vlm.reduce import Features


def _resize(x: Tensor, height: int, width: int) -> Tensor:
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)


def _canvas(x: Tensor, layout: TileLayout) -> Tensor:
    """(B, 3, S, S) floats -> (B, 3, rows * t, cols * t): resized (dynamic), or resized keeping
    the aspect and padded black, centred (anyres: LLaVA-NeXT's resize_and_pad_image)."""
    t = layout.tile_size
    height, width = layout.rows * t, layout.cols * t
    if layout.scheme == "dynamic":
        return _resize(x, height, width)
    new_w, new_h = fitted_size((x.shape[-1], x.shape[-2]), (width, height))
    out = x.new_zeros(*x.shape[:2], height, width)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[..., top:top + new_h, left:left + new_w] = _resize(x, new_h, new_w)
    return out


def tile_images(images: Tensor, layout: TileLayout) -> Tensor:
    """uint8 (B, 3, S, S) -> uint8 (B * T, 3, t, t): each sample's tiles row-major, with its
    thumbnail last (dynamic) or first (anyres). Each tile is a uint8 image again, as the
    official code's PIL crops are, so an expert prepares it as any image."""
    b, t = images.shape[0], layout.tile_size
    x = images.float()
    canvas = _canvas(x, layout)                                               # (B, 3, rows*t, cols*t)
    tiles = (canvas.view(b, 3, layout.rows, t, layout.cols, t)
             .permute(0, 2, 4, 1, 3, 5).reshape(b, layout.tiles, 3, t, t))  # row-major tiles
    parts = [tiles]
    if layout.thumbnail:
        thumb = _resize(x, t, t)[:, None]                                     # (B, 1, 3, t, t)
        parts = [thumb, tiles] if layout.thumbnail_first else [tiles, thumb]
    out = torch.cat(parts, dim=1).flatten(0, 1)                               # (B*T, 3, t, t)
    return out.round().clamp(0, 255).to(torch.uint8)


def fold(layers: Sequence[Features], images: int) -> list[Features]:
    """(B * T, n, C) on (h, w) -> (B, T * n, C) on (T * h, w): one row per sample (the cache)."""
    out = []
    for f in layers:
        bt, n, c = f.tokens.shape
        out.append(Features(f.tokens.reshape(bt // images, images * n, c), (images * f.grid[0], f.grid[1])))
    return out


def unfold(layers: Sequence[Features], images: int) -> list[Features]:
    """The inverse of `fold`: (B, T * n, C) on (T * h, w) -> (B * T, n, C) on (h, w)."""
    out = []
    for f in layers:
        b, tn, c = f.tokens.shape
        grid = (f.grid[0] // images, f.grid[1])
        out.append(Features(f.tokens.reshape(b * images, tn // images, c), grid))
    return out


class TileMerge(nn.Module):
    """Per-tile fused groups (each (B * T, n, d)) -> the LM's groups (`TileLayout.groups`), each
    (B, N, d).

    anyres with `newline`: LLaVA-NeXT's `image_newline` (d,), initialised randn / sqrt(d)."""

    def __init__(self, layout: TileLayout, d_model: int) -> None:
        super().__init__()
        self.layout = layout
        self.newline = (nn.Parameter(torch.randn(d_model) / d_model ** 0.5) if layout.newline
                        else None)

    def forward(self, groups: Sequence[Features]) -> tuple[Features, ...]:
        lay = self.layout
        per_image = [(g.tokens.reshape(-1, lay.images, *g.tokens.shape[1:]), g.grid)  # (B, T, n, d)
                     for g in groups]
        if lay.scheme == "dynamic":  # image after image (thumbnail last), each image's groups
            return tuple(Features(t[:, i], grid) for i in range(lay.images) for t, grid in per_image)
        base = int(lay.thumbnail)
        head = [Features(t[:, 0], grid) for t, grid in per_image] if base else []
        return (*head, *(self._merge(t[:, base:], grid) for t, grid in per_image))

    def _merge(self, tiles: Tensor, grid: tuple[int, int]) -> Features:
        """(B, tiles, h*w, d) -> the unpadded (H, W) map, + a newline column: (B, H*(W+1), d)."""
        lay, (h, w) = self.layout, grid
        b, d = tiles.shape[0], tiles.shape[-1]
        x = (tiles.reshape(b, lay.rows, lay.cols, h, w, d).permute(0, 1, 3, 2, 4, 5)
             .reshape(b, lay.rows * h, lay.cols * w, d))                   # LLaVA-NeXT's spatial merge
        top, bottom, left, right = lay.merged_bounds(grid)
        x = x[:, top:bottom, left:right]                                    # unpad_image
        if self.newline is not None:
            nl = self.newline.to(x.dtype).expand(b, x.shape[1], 1, d)
            x = torch.cat([x, nl], dim=2)                                   # (B, H, W + 1, d)
        return Features(x.flatten(1, 2), (x.shape[1], x.shape[2]))
