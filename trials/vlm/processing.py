"""How an expert's input is prepared: the checkpoint's `preprocessor_config.json` when it has one
(mean/std, resize and centre crop), else its family's defaults.

Every expert reads the same decoded square image (`data.image_size`, LLaVA's pad-to-square
applied when asked); from it each expert takes its own view: resized to its input side, or, when
its processor resizes to S and centre-crops C < S (DINOv2: 256 -> 224), resized to side * S / C
and centre-cropped to its side, as the processor does to a square image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor

RGB = tuple[float, float, float]
FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class Processing:
    mean: RGB
    std: RGB
    crop_ratio: float = 1.0  # crop side / resize side (1: the whole image)
    file: Path | None = None  # the preprocessor_config.json read, if any

    def view(self, x: Tensor, side: int) -> Tensor:
        """Float images (B, 3, H, W) in [0, 1] -> (B, 3, side, side), resized (and centre-cropped)."""
        if self.crop_ratio < 1.0:
            big = round(side / self.crop_ratio)
            x = F.interpolate(x, size=(big, big), mode="bilinear", antialias=True, align_corners=False)
            top = (big - side) // 2
            return x[..., top:top + side, top:top + side]
        if tuple(x.shape[-2:]) != (side, side):
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        return x


def _side(value: Any) -> int | None:
    """A processor's size: an int, {shortest_edge}, or {height, width} (the smaller)."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
        sides = [int(value[k]) for k in ("height", "width") if k in value]
        return min(sides) if sides else None
    return None


def preprocessor_file(source: str) -> Path | None:
    """The checkpoint's preprocessor_config.json (a local directory, or the hub cache), if any."""
    local = Path(source).expanduser() / FILE
    if local.is_file():
        return local
    try:
        from transformers.utils import cached_file

        found = cached_file(source, FILE, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False, local_files_only=True)
    except (OSError, ValueError):
        return None
    return Path(found) if found else None


def processing(source: str, mean: RGB, std: RGB) -> Processing:
    """The checkpoint's processing, or the family's `mean`/`std` when it ships no processor."""
    file = preprocessor_file(source)
    if file is None:
        return Processing(mean, std)
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{file} is not a readable processor config ({exc}); fix or remove it") from exc
    if not isinstance(cfg, dict):
        raise ValueError(f"{file} holds a JSON {type(cfg).__name__}, not an object; fix or remove it")
    resize, crop = _side(cfg.get("size")), _side(cfg.get("crop_size"))
    cropping = bool(cfg.get("do_center_crop", crop is not None)) and resize and crop and crop < resize
    return Processing(_rgb(cfg.get("image_mean"), mean, file), _rgb(cfg.get("image_std"), std, file),
                      crop / resize if cropping else 1.0, file)  # type: ignore[operator]


def _rgb(value: Any, default: RGB, file: Path) -> RGB:
    if value is None:
        return default
    if isinstance(value, int | float):
        return (float(value),) * 3  # type: ignore[return-value]
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, int | float) for v in value)):
        raise ValueError(f"{file}: image_mean/image_std must be 3 numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))
