"""Experts from timm and OpenCLIP (`source: timm:<name>`, `source: open_clip:<name>`): their
geometry without torch, for the cost model and `vlmsearch check`.

Forms of `source` (REFERENCE.md, "Experts"):

- `timm:<model name>` (a timm architecture, optionally `.<pretrained tag>`), or `timm:<dir>`:
  a directory `timm.models.save_for_hf` / `push_to_hub` wrote (`config.json` with
  `architecture`, `model_args`, `pretrained_cfg`, and `model.safetensors` / `pytorch_model.bin`).
- `open_clip:<model config name>` (its first pretrained tag), `open_clip:<name>@<tag>`,
  `open_clip:<name>@<weights file>` (as `open_clip.create_model(name, pretrained=PATH)`), or
  `open_clip:<dir>`: `open_clip_config.json` (`model_cfg`, `preprocess_cfg`) and its weights.

Geometry comes from the tables below (the architectures the papers use: EVA-02-L of EAGLE,
CLIP-ConvNeXt-L/XXL of Mini-Gemini, LLaVA-HR and Cambrian), from a local config file, or from
OpenCLIP's packaged model configs when open_clip is installed (read as JSON, not imported).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_space.presets import FAMILIES, ExpertInfo, Family, read_config

SCHEMES = ("timm", "open_clip")
CONVNEXT_STRIDES = (4, 4, 8, 16, 32)  # stem, then each stage (the first keeps the stem's stride)

for _name, _cls, _desc in [
    ("timm_vit", "timm.VisionTransformer", "timm ViT / EVA (and OpenCLIP's timm towers); prefix tokens "
                                           "dropped"),
    ("timm_convnext", "timm.ConvNeXt", "timm ConvNeXt (and OpenCLIP's CLIP-ConvNeXt); stem + stage maps"),
    ("open_clip_vit", "open_clip.VisionTransformer", "OpenCLIP ViT (visual.transformer.resblocks); "
                                                     "class token dropped"),
]:
    FAMILIES.register(_name, Family(_cls, _desc), _desc)


@dataclass(frozen=True)
class SourceRef:
    """A parsed `timm:` / `open_clip:` source."""

    scheme: str             # timm | open_clip
    name: str               # architecture / model config name, or a directory
    pretrained: str | None  # open_clip: a pretrained tag or a weights file

    @property
    def local_dir(self) -> Path | None:
        path = Path(self.name).expanduser()
        return path if self.name.startswith((".", "/", "~")) or path.is_dir() else None


def is_source_ref(source: str) -> bool:
    return source.split(":", 1)[0] in SCHEMES and ":" in source


def parse_source(source: str) -> SourceRef:
    scheme, _, rest = source.partition(":")
    if scheme not in SCHEMES or not rest.strip():
        raise ValueError(f"'{source}' is not a timm/open_clip source; write timm:<model name or dir> or "
                         "open_clip:<model name>[@<pretrained tag or weights file>] or open_clip:<dir>")
    name, _, pretrained = rest.partition("@") if scheme == "open_clip" else (rest, "", "")
    return SourceRef(scheme, name, pretrained or None)


# ---- timm architectures ---------------------------------------------------------------------

# Each architecture's factory arguments in timm (timm/models/{eva,vision_transformer,convnext}.py
# of timm 1.0.31): what the geometry reads. ViTs: img_size, patch_size, depth, embed_dim;
# ConvNeXts: depths, dims (stem stride 4).
TIMM_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "eva02_large_patch14_clip_336": {"img_size": 336, "patch_size": 14, "depth": 24, "embed_dim": 1024},
    "eva02_large_patch14_clip_224": {"img_size": 224, "patch_size": 14, "depth": 24, "embed_dim": 1024},
    "eva02_large_patch14_448": {"img_size": 448, "patch_size": 14, "depth": 24, "embed_dim": 1024},
    "eva02_base_patch14_448": {"img_size": 448, "patch_size": 14, "depth": 12, "embed_dim": 768},
    "vit_large_patch14_clip_336": {"img_size": 336, "patch_size": 14, "depth": 24, "embed_dim": 1024},
    "vit_large_patch14_clip_224": {"img_size": 224, "patch_size": 14, "depth": 24, "embed_dim": 1024},
    "vit_base_patch16_224": {"img_size": 224, "patch_size": 16, "depth": 12, "embed_dim": 768},
    "vit_tiny_patch16_224": {"img_size": 224, "patch_size": 16, "depth": 12, "embed_dim": 192},
    "convnext_base": {"depths": [3, 3, 27, 3], "dims": [128, 256, 512, 1024], "img_size": 224},
    "convnext_large": {"depths": [3, 3, 27, 3], "dims": [192, 384, 768, 1536], "img_size": 224},
    "convnext_large_mlp": {"depths": [3, 3, 27, 3], "dims": [192, 384, 768, 1536], "img_size": 256},
    "convnext_large_mlp.clip_laion2b_ft_320": {"img_size": 320},  # a pretrained tag's own side
    "convnext_xxlarge": {"depths": [3, 4, 30, 3], "dims": [384, 768, 1536, 3072], "img_size": 256},
    "convnext_atto": {"depths": [2, 2, 6, 2], "dims": [40, 80, 160, 320], "img_size": 224},
}


def _side(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple) and value:
        return int(value[-1])
    return None


def timm_info(architecture: str, model_args: dict[str, Any] | None = None, image_size: int | None = None,
              config: dict[str, Any] | None = None) -> ExpertInfo:
    """Geometry of a timm architecture built with `model_args` (they override its defaults)."""
    base = architecture.split(".", 1)[0]  # eva02_large_patch14_clip_336.merged2b -> the architecture
    args = {**TIMM_ARCHITECTURES.get(base, {}), **TIMM_ARCHITECTURES.get(architecture, {}),
            **(model_args or {})}
    side = image_size or _side(args.get("img_size")) or 224
    config = config or {"scheme": "timm", "architecture": architecture, "model_args": model_args or {}}
    if "dims" in args or base.startswith("convnext"):
        dims = args.get("dims")
        if not dims:
            raise ValueError(_unknown_architecture(architecture, "dims"))
        dims = tuple(int(d) for d in dims)
        return ExpertInfo("timm_convnext", "timm.ConvNeXt", side, 4, len(dims), dims[-1],
                          stage_strides=CONVNEXT_STRIDES[: len(dims) + 1], stage_widths=(dims[0], *dims),
                          config=config)
    missing = [key for key in ("patch_size", "depth", "embed_dim") if key not in args]
    if missing:
        raise ValueError(_unknown_architecture(architecture, ", ".join(missing)))
    return ExpertInfo("timm_vit", "timm.VisionTransformer", side, _side(args["patch_size"]) or 16,
                      int(args["depth"]), int(args["embed_dim"]), config=config)


def _unknown_architecture(architecture: str, missing: str) -> str:
    return (f"the geometry of timm architecture '{architecture}' is not known without torch ({missing} "
            f"missing); give them in its config.json `model_args`, or use one of: "
            f"{', '.join(sorted(TIMM_ARCHITECTURES))}")


def _timm_dir_info(path: Path) -> ExpertInfo:
    file = path / "config.json"
    if not file.is_file():
        raise ValueError(f"{path} has no config.json; save the timm model with "
                         "timm.models.save_for_hf(model, dir) (it writes config.json and the weights)")
    cfg = read_config(file)
    if "architecture" not in cfg:
        raise ValueError(f"{file} names no `architecture`: it is not a timm config.json (an HF "
                         "checkpoint directory is named without the timm: prefix)")
    input_size = (cfg.get("pretrained_cfg") or {}).get("input_size")
    return timm_info(cfg["architecture"], cfg.get("model_args") or {}, _side(input_size),
                     {"scheme": "timm", "architecture": cfg["architecture"],
                      "model_args": cfg.get("model_args") or {}})


# ---- OpenCLIP model configs -----------------------------------------------------------------

# vision_cfg of OpenCLIP's model configs (open_clip/model_configs/<name>.json, open_clip 3.3.0):
# the ones the papers name, so they are known without open_clip installed.
OPEN_CLIP_VISION: dict[str, dict[str, Any]] = {
    "convnext_large_d_320": {"timm_model_name": "convnext_large", "image_size": 320},  # MGM, LLaVA-HR
    "convnext_large_d": {"timm_model_name": "convnext_large", "image_size": 256},
    "convnext_xxlarge": {"timm_model_name": "convnext_xxlarge", "image_size": 256},  # Cambrian
    "convnext_xxlarge_320": {"timm_model_name": "convnext_xxlarge", "image_size": 320},
    "EVA02-L-14-336": {"timm_model_name": "eva02_large_patch14_clip_336", "image_size": 336},
    "ViT-L-14-336": {"image_size": 336, "layers": 24, "width": 1024, "patch_size": 14},
    "ViT-L-14": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
}


def _packaged_open_clip_config(name: str) -> dict[str, Any] | None:
    """open_clip's own model_configs/<name>.json, found without importing open_clip."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        file = Path(root) / "model_configs" / f"{name}.json"
        if file.is_file():
            return json.loads(file.read_text(encoding="utf-8"))
    return None


def open_clip_info(vision: dict[str, Any], config: dict[str, Any]) -> ExpertInfo:
    """Geometry of an OpenCLIP vision tower from its `vision_cfg`."""
    side = _side(vision.get("image_size")) or 224
    if "timm_model_name" in vision:
        return timm_info(vision["timm_model_name"], {}, side, config)
    return ExpertInfo("open_clip_vit", "open_clip.VisionTransformer", side,
                      _side(vision.get("patch_size")) or 16, int(vision.get("layers", 12)),
                      int(vision.get("width", 768)), config=config)


def _open_clip_model_cfg(ref: SourceRef) -> dict[str, Any]:
    path = ref.local_dir
    if path is not None:
        file = path / "open_clip_config.json"
        if not file.is_file():
            raise ValueError(f"{path} has no open_clip_config.json; an OpenCLIP directory holds it "
                             "(model_cfg, preprocess_cfg) and the weights, or write "
                             "open_clip:<model name>@<weights file>")
        model_cfg = read_config(file).get("model_cfg")
        if not isinstance(model_cfg, dict):
            raise ValueError(f"{file} has no `model_cfg` object; it is not an OpenCLIP config")
        return model_cfg
    packaged = _packaged_open_clip_config(ref.name)
    if packaged is not None:
        return packaged
    if ref.name in OPEN_CLIP_VISION:
        return {"vision_cfg": OPEN_CLIP_VISION[ref.name]}
    raise ValueError(f"unknown OpenCLIP model config '{ref.name}' (open_clip.list_models() names them); "
                     f"known without open_clip: {', '.join(sorted(OPEN_CLIP_VISION))}")


def source_info(source: str) -> ExpertInfo:
    """Geometry of a `timm:` / `open_clip:` source, without torch."""
    ref = parse_source(source)
    if ref.scheme == "timm":
        return _timm_dir_info(ref.local_dir) if ref.local_dir else timm_info(ref.name)
    model_cfg = _open_clip_model_cfg(ref)
    config = {"scheme": "open_clip", "name": ref.name, "model_cfg": model_cfg}
    return open_clip_info(model_cfg.get("vision_cfg") or {}, config)
