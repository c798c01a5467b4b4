"""Experts from timm and OpenCLIP (`source: timm:...`, `source: open_clip:...`; the forms are in
search_space/sources.py), and the remote-code gate of HF experts (`trust_remote_code`).

Each is loaded through its library's own factory (`timm.create_model`, `open_clip.create_model`)
and wrapped in a `SourceModel`; a family adapter reads its layers as HF's are read: index 0 =
the embeddings (the first block's input; ConvNeXt: the stem), i = block / stage i, -1 = last;
ViT tokens (B, prefix + h*w, C) with the prefix (class, register tokens) dropped, ConvNeXt maps
(B, C, H, W) channels-first. Mean and std come from the model's pretrained cfg (timm) or
OpenCLIP's preprocess config.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from search_space import FAMILIES, Registry, SourceRef, parse_source, read_config
from trials.vlm.processing import Processing
from trials.vlm.reduce import Grid

RGB = tuple[float, float, float]
WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pth", "*.pt")


def _library(name: str, extra: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"this expert needs {name} ({exc}); install it: pip install 'vlmsearch[{extra}]'"
                          ) from exc


class SourceModel(nn.Module):
    """A timm model or an OpenCLIP vision tower, with its normalisation."""

    def __init__(self, net: nn.Module, mean: Any, std: Any) -> None:
        super().__init__()
        self.net = net
        self.image_mean: RGB = tuple(float(v) for v in mean)  # type: ignore[assignment]
        self.image_std: RGB = tuple(float(v) for v in std)    # type: ignore[assignment]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def _stamp(files: list[Path]) -> str:
    """Config bytes and weight files' names, sizes and mtimes (as `families.checkpoint_identity`)."""
    parts = []
    for file in files:
        if file.suffix == ".json":
            parts.append(file.read_bytes())
        else:
            stat = file.stat()
            parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return hashlib.sha256(b"|".join(parts)).hexdigest()[:16]


def _dir_stamp(path: Path, config: str) -> str:
    weights = sorted(f for pattern in WEIGHT_GLOBS for f in path.glob(pattern))
    if not weights:
        raise ValueError(f"{path} holds no weights file (model.safetensors, pytorch_model.bin, "
                         "open_clip_model.safetensors, ...); save the model's weights there")
    return _stamp([path / config, *weights])


# ---- loaders, one per library -----------------------------------------------------------------


class TimmLoader:
    """`timm:<architecture>` (its pretrained weights, from the hub cache) or `timm:<dir>`."""

    def create(self, name: str, pretrained: bool, kwargs: dict[str, Any]) -> SourceModel:
        timm = _library("timm", "timm")
        net = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
        cfg = net.pretrained_cfg
        return SourceModel(net, cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225)))

    def load(self, ref: SourceRef, kwargs: dict[str, Any], image_size: int | None) -> SourceModel:
        local = ref.local_dir
        return self.create(f"local-dir:{local}" if local else ref.name, True, kwargs)

    def build(self, config: dict[str, Any], kwargs: dict[str, Any], image_size: int | None) -> SourceModel:
        return self.create(config["architecture"], False, {**config["model_args"], **kwargs})

    def identity(self, ref: SourceRef) -> str:
        timm = _library("timm", "timm")
        local = ref.local_dir
        if local:
            return f"timm:{local.resolve()}#{_dir_stamp(local, 'config.json')}"
        cfg = timm.models.get_pretrained_cfg(ref.name)
        hub = getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None) or ""
        return f"timm:{ref.name}@{hub}{_hub_stamp(hub)}:timm-{timm.__version__}"


def _hub_stamp(repo: str) -> str:
    """The cached hub snapshot (its path names the commit) of `repo`'s weights, if cached."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return ""
    for name in ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin",
                 "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, name) if repo and "/" in repo else None
        if isinstance(found, str):
            return f"#{found}:{_stamp([Path(found)])}"
    return ""


class OpenClipLoader:
    """`open_clip:<name>[@<tag or file>]` or `open_clip:<dir>`; only the vision tower is kept."""

    def _model_name(self, ref: SourceRef) -> str:
        local = ref.local_dir
        return f"local-dir:{local}" if local else ref.name

    def _pretrained(self, ref: SourceRef) -> str | None:
        if ref.local_dir or ref.pretrained:
            return ref.pretrained
        tags = _library("open_clip", "openclip").list_pretrained_tags_by_model(ref.name)
        if not tags:
            raise ValueError(f"OpenCLIP model '{ref.name}' has no pretrained tag; write "
                             f"open_clip:{ref.name}@<weights file>")
        return tags[0]

    def create(self, ref: SourceRef, load_weights: bool, image_size: int | None,
               native: int | None) -> SourceModel:
        open_clip = _library("open_clip", "openclip")
        force = image_size if image_size and image_size != native else None
        model = open_clip.create_model(self._model_name(ref), pretrained=self._pretrained(ref) if
                                       load_weights else None, load_weights=load_weights,
                                       force_image_size=force)
        visual = model.visual
        return SourceModel(visual, visual.image_mean, visual.image_std)

    def load(self, ref: SourceRef, kwargs: dict[str, Any], image_size: int | None) -> SourceModel:
        return self.create(ref, True, image_size, kwargs.get("native"))

    def build(self, config: dict[str, Any], kwargs: dict[str, Any], image_size: int | None) -> SourceModel:
        ref = parse_source(f"open_clip:{config['name']}")
        return self.create(ref, False, image_size, kwargs.get("native"))

    def identity(self, ref: SourceRef) -> str:
        open_clip = _library("open_clip", "openclip")
        local = ref.local_dir
        if local:
            return f"open_clip:{local.resolve()}#{_dir_stamp(local, 'open_clip_config.json')}"
        tag = self._pretrained(ref) or ""
        file = Path(tag).expanduser()
        if file.is_file():
            return f"open_clip:{ref.name}@{file.resolve()}#{_stamp([file])}"
        cfg = open_clip.get_pretrained_cfg(ref.name, tag) or {}
        hub = cfg.get("hf_hub", "").rstrip("/")
        return f"open_clip:{ref.name}@{tag}:{hub or cfg.get('url', '')}{_hub_stamp(hub)}" \
               f":open_clip-{open_clip.__version__}"


LOADERS: Registry[Any] = Registry("expert source")
LOADERS.register("timm", TimmLoader(), "timm.create_model (a timm name or a save_for_hf directory)")
LOADERS.register("open_clip", OpenClipLoader(), "open_clip.create_model (a config name + tag/file, or a dir)")


# ---- reading the layers -----------------------------------------------------------------------


def _block_states(blocks: nn.ModuleList | nn.Sequential, run: Callable[[], Any]) -> list[Tensor]:
    """The first block's input, then every block's output, while `run` runs the model."""
    states: list[Tensor] = []
    hooks = [blocks[0].register_forward_pre_hook(lambda module, args: states.append(args[0]))]
    hooks += [block.register_forward_hook(lambda module, args, out: states.append(out)) for block in blocks]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return states


def _drop_prefix(state: Tensor, side: tuple[int, int], patch: Any, family: str) -> tuple[Tensor, Grid]:
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    h, w = side[0] // ph, side[1] // pw
    if state.shape[1] < h * w:
        raise ValueError(f"{family}: {state.shape[1]} tokens cannot hold a {h}x{w} grid")
    return state[:, state.shape[1] - h * w:], (h, w)  # (B, h*w, C): class/register tokens dropped


def _read_map(state: Tensor) -> tuple[Tensor, Grid]:
    h, w = state.shape[-2:]  # channels-first (B, C, H, W)
    return state.flatten(2).transpose(1, 2), (int(h), int(w))  # (B, h*w, C)


def timm_net(model: SourceModel) -> nn.Module:
    """The timm model itself (an OpenCLIP timm tower holds it as `trunk`)."""
    return getattr(model.net, "trunk", model.net)


def read_timm_vit(model: SourceModel, pixels: Tensor) -> list[tuple[Tensor, Grid]]:
    net = timm_net(model)
    states = _block_states(net.blocks, lambda: net.forward_features(pixels))
    side = (int(pixels.shape[-2]), int(pixels.shape[-1]))
    return [_drop_prefix(s, side, net.patch_embed.patch_size, "timm_vit") for s in states]


def read_convnext(model: SourceModel, pixels: Tensor) -> list[tuple[Tensor, Grid]]:
    net = timm_net(model)
    x = net.stem(pixels)  # (B, C0, S/4, S/4)
    states = [x]
    for stage in net.stages:
        x = stage(x)
        states.append(x)
    return [_read_map(s) for s in states]


def read_open_clip_vit(model: SourceModel, pixels: Tensor) -> list[tuple[Tensor, Grid]]:
    net = model.net
    states = _block_states(net.transformer.resblocks, lambda: net(pixels))
    if not getattr(net.transformer, "batch_first", True):
        states = [s.transpose(0, 1) for s in states]  # (N, B, C) -> (B, N, C)
    side = (int(pixels.shape[-2]), int(pixels.shape[-1]))
    return [_drop_prefix(s, side, net.patch_size, "open_clip_vit") for s in states]


# family -> (how its layers are read, timm factory kwargs it is built with)
READERS: dict[str, tuple[Callable[[SourceModel, Tensor], list[tuple[Tensor, Grid]]], dict[str, Any]]] = {
    "timm_vit": (read_timm_vit, {"dynamic_img_size": True}),  # positions interpolated at any side
    "timm_convnext": (read_convnext, {}),
    "open_clip_vit": (read_open_clip_vit, {}),
}


def register_adapters(adapters: Registry[Any], base: type) -> None:
    """One adapter per family, on families.py's `FamilyAdapter` (passed in: no import cycle)."""

    class SourceAdapter(base):  # type: ignore[valid-type, misc]
        """A timm / OpenCLIP model: loaded by its library, read by the family's reader."""

        def _loader(self, scheme: str) -> Any:
            return LOADERS.get(scheme)

        def _kwargs(self, scheme: str) -> dict[str, Any]:
            own = READERS[self.family][1] if scheme == "timm" else {}
            return {**own, "native": self.native} if scheme == "open_clip" else own

        def make_config(self, kwargs: dict[str, Any]) -> dict[str, Any]:
            return dict(kwargs)  # the source's `ExpertInfo.config`

        def build(self, config: dict[str, Any]) -> SourceModel:
            scheme = config["scheme"]
            return self._loader(scheme).build(config, self._kwargs(scheme), self.image_size)

        def load(self, source: str) -> SourceModel:
            ref = parse_source(source)
            return self._loader(ref.scheme).load(ref, self._kwargs(ref.scheme), self.image_size)

        def identity(self, source: str) -> str:
            ref = parse_source(source)
            return self._loader(ref.scheme).identity(ref)

        def processing(self, source: str, model: Any) -> Processing:
            return Processing(model.image_mean, model.image_std)

        def layers(self, model: Any, pixels: Tensor) -> list[tuple[Tensor, Grid]]:
            base_model = model.get_base_model() if hasattr(model, "get_base_model") else model
            return READERS[self.family][0](base_model, pixels)

    for family in READERS:
        adapters.register(family, type(f"{family}_adapter", (SourceAdapter,), {"family": family}),
                          FAMILIES.description(family))


# ---- remote code ------------------------------------------------------------------------------


def needs_remote_code(source: str) -> bool:
    """A local HF checkpoint whose config maps its classes to its own code (`auto_map`)."""
    file = Path(source).expanduser() / "config.json"
    return file.is_file() and "auto_map" in read_config(file)


def remote_code_refused(source: str) -> ValueError:
    return ValueError(f"expert '{source}' runs its own modeling code (its config has auto_map); set "
                      "`trust_remote_code: true` on this expert in the YAML if you trust that code")
