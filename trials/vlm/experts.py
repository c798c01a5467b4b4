"""Frozen vision experts: build or load an HF vision model, run it, read its layers as tokens.

REFERENCE.md, "Experts": every expert yields, per selected layer, tokens (B, N, C) on a grid
(h, w) with CLS/register tokens dropped; hidden-state index 0 = embeddings, -1 = last block.
A family adapter (registered by family name) holds each family's quirks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

import torch
import transformers
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import cached_file

from search_space import (
    FAMILIES,
    NECK,
    PRESETS,
    ExpertConfig,
    ExpertInfo,
    Registry,
    expert_info,
    info_from_config,
    layer_shapes,
    resolved_reduction,
)
from trials.vlm.expert_sources import needs_remote_code, register_adapters, remote_code_refused
from trials.vlm.processing import Processing, processing
from trials.vlm.reduce import MERGE_MODULES, Features, Grid, reduce_layers
from trials.vlm.tiling import TileLayout, fold, tile_images, unfold

__all__ = ["ADAPTERS", "Expert", "ExpertTokens", "FamilyAdapter", "Features", "Inject", "out_width",
           "preset_seed", "reduced_widths", "resolve_info"]

# block k (1-based) -> what replaces hidden state k: fn(patch tokens (B, h*w, C), grid) -> (B, h*w, C)
Inject = Mapping[int, Callable[[Tensor, Grid], Tensor]]

RGB = tuple[float, float, float]
IMAGENET_MEAN: RGB = (0.485, 0.456, 0.406)
IMAGENET_STD: RGB = (0.229, 0.224, 0.225)
CLIP_MEAN: RGB = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: RGB = (0.26862954, 0.26130258, 0.27577711)


class FamilyAdapter:
    """How one family of HF vision models is built, run, and read as per-layer token grids.

    The default reads a ViT: hidden states (B, prefix + h*w, C), `prefix` CLS/register tokens.
    """

    family: ClassVar[str] = "generic"
    mean: ClassVar[RGB] = IMAGENET_MEAN
    std: ClassVar[RGB] = IMAGENET_STD
    fixed_image_size: ClassVar[bool] = False    # the config fixes the input side (SAM)
    overrides: ClassVar[dict[str, Any]] = {}    # config values this family must run with
    blocks_path: ClassVar[str | None] = None    # the ViT's block list (`inject` hooks it)
    trust_remote_code: bool = False             # the expert's `trust_remote_code`
    image_size: int | None = None               # the side it runs at, and its native one
    native: int | None = None

    def setup(self, cfg: ExpertConfig, image_size: int, native: int) -> FamilyAdapter:
        self.trust_remote_code, self.image_size, self.native = cfg.trust_remote_code, image_size, native
        return self

    def identity(self, source: str) -> str:
        """What the loaded weights are (the feature cache's key): changes when they change."""
        return _checkpoint_identity(source)

    def processing(self, source: str, model: nn.Module) -> Processing:
        return processing(source, self.mean, self.std)

    def model_class(self) -> type[PreTrainedModel]:
        return getattr(transformers, FAMILIES.get(self.family).hf_class)

    def make_config(self, kwargs: dict[str, Any]) -> PretrainedConfig:
        return self.model_class().config_class(**{**kwargs, **self.overrides})

    def build(self, config: PretrainedConfig) -> PreTrainedModel:
        return self.model_class()._from_config(config)

    def load(self, source: str) -> PreTrainedModel:
        return self.model_class().from_pretrained(source, dtype=torch.float32, **self.overrides)

    def run(self, model: PreTrainedModel, pixels: Tensor) -> list[Tensor]:
        """HF hidden states of `pixels` (B, 3, S, S), index 0 = embeddings."""
        return list(model(pixel_values=pixels, output_hidden_states=True).hidden_states)

    def prefix(self, config: PretrainedConfig) -> int:
        """CLS/register tokens ahead of the patch tokens."""
        return 1

    def read(self, state: Tensor, config: PretrainedConfig, side: int) -> tuple[Tensor, Grid]:
        h = w = side // config.patch_size
        skip = self.prefix(config)
        if state.shape[1] != skip + h * w:
            raise ValueError(f"{self.family}: {state.shape[1]} tokens, expected {skip} + {h}x{w}")
        return state[:, skip:], (h, w)  # (B, h*w, C)

    def layers(self, model: PreTrainedModel, pixels: Tensor) -> list[tuple[Tensor, Grid]]:
        side = int(pixels.shape[-1])
        return [self.read(state, model.config, side) for state in self.run(model, pixels)]

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The transformer blocks, in order (through a PEFT wrapper)."""
        if self.blocks_path is None:
            raise ValueError(f"{self.family} experts take no adapters between their blocks; make a "
                             "clip, siglip or dinov2 ViT the primary expert (primary: true)")
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return base.get_submodule(self.blocks_path)

    @contextmanager
    def inject(self, model: nn.Module, fns: Inject, side: int) -> Iterator[None]:
        """While open, block k's output patch tokens are replaced by `fns[k](tokens, grid)` (the
        prefix tokens pass unchanged), so later blocks and hidden state k see the result."""
        blocks, skip = self.blocks(model), self.prefix(model.config)
        grid = (side // model.config.patch_size, side // model.config.patch_size)

        def hook(fn: Callable[[Tensor, Grid], Tensor], output: Any) -> Any:
            state = output[0] if isinstance(output, tuple) else output      # (B, skip + h*w, C)
            state = torch.cat([state[:, :skip], fn(state[:, skip:], grid)], dim=1)
            return (state, *output[1:]) if isinstance(output, tuple) else state

        handles = []
        for k, fn in fns.items():
            if not 1 <= k <= len(blocks):
                raise ValueError(f"no block {k}: the expert has blocks 1 to {len(blocks)}")
            # prepend: ahead of the hook HF records hidden states with
            handles.append(blocks[k - 1].register_forward_hook(
                lambda _m, _a, out, fn=fn: hook(fn, out), prepend=True))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def select(self, model: PreTrainedModel, pixels: Tensor, layers: tuple[int | str, ...]
               ) -> list[tuple[Tensor, Grid]]:
        """The selected layers' tokens and grids (one forward)."""
        states = self.layers(model, pixels)
        return [states[i] for i in layers]  # type: ignore[index]


ADAPTERS: Registry[type[FamilyAdapter]] = Registry("expert family")


class _Interpolating(FamilyAdapter):
    """ViTs whose position embeddings interpolate only when asked."""

    def run(self, model: PreTrainedModel, pixels: Tensor) -> list[Tensor]:
        out = model(pixel_values=pixels, output_hidden_states=True, interpolate_pos_encoding=True)
        return list(out.hidden_states)


@ADAPTERS.decorator("clip", FAMILIES.description("clip"))
class ClipAdapter(_Interpolating):
    family = "clip"
    blocks_path = "encoder.layers"
    mean, std = CLIP_MEAN, CLIP_STD


@ADAPTERS.decorator("siglip", FAMILIES.description("siglip"))
class SiglipAdapter(_Interpolating):
    family = "siglip"
    blocks_path = "encoder.layers"
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def prefix(self, config: PretrainedConfig) -> int:
        return 0


@ADAPTERS.decorator("dinov2", FAMILIES.description("dinov2"))
class Dinov2Adapter(FamilyAdapter):
    family = "dinov2"
    blocks_path = "encoder.layer"

    def prefix(self, config: PretrainedConfig) -> int:
        return 1 + int(getattr(config, "num_register_tokens", 0) or 0)


@ADAPTERS.decorator("mae", FAMILIES.description("mae"))
class MaeAdapter(FamilyAdapter):
    """mask_ratio 0 keeps every token; a fixed increasing `noise` keeps their order (HF
    otherwise shuffles the tokens even when none is masked)."""

    family = "mae"
    overrides: ClassVar[dict[str, Any]] = {"mask_ratio": 0.0}

    def run(self, model: PreTrainedModel, pixels: Tensor) -> list[Tensor]:
        b, patch = pixels.shape[0], model.config.patch_size
        n = (pixels.shape[-2] // patch) * (pixels.shape[-1] // patch)
        noise = torch.arange(n, device=pixels.device, dtype=torch.float32).expand(b, n)
        out = model(pixel_values=pixels, noise=noise, output_hidden_states=True,
                    interpolate_pos_encoding=True)
        return list(out.hidden_states)


def _read_map(state: Tensor) -> tuple[Tensor, Grid]:
    h, w = state.shape[-2:]  # channels-first map (B, C, H, W)
    return state.flatten(2).transpose(1, 2), (int(h), int(w))  # (B, h*w, C)


@ADAPTERS.decorator("sam", FAMILIES.description("sam"))
class SamAdapter(FamilyAdapter):
    """The blocks' hidden states are channels-last; layer `neck` is the neck's output
    (`last_hidden_state`, channels-first (B, output_channels, H, W): what LEO and MouSi read)."""

    family = "sam"
    fixed_image_size = True

    def read(self, state: Tensor, config: PretrainedConfig, side: int) -> tuple[Tensor, Grid]:
        b, h, w, c = state.shape  # channels-last (B, H, W, C)
        return state.reshape(b, h * w, c), (h, w)

    def select(self, model: PreTrainedModel, pixels: Tensor, layers: tuple[int | str, ...]
               ) -> list[tuple[Tensor, Grid]]:
        out = model(pixel_values=pixels, output_hidden_states=True)
        side = int(pixels.shape[-1])
        return [_read_map(out.last_hidden_state) if layer == NECK  # (B, h*w, output_channels)
                else self.read(out.hidden_states[layer], model.config, side) for layer in layers]


@ADAPTERS.decorator("internvit", FAMILIES.description("internvit"))
class InternVitAdapter(FamilyAdapter):
    """InternViT's modeling code lives in its checkpoint (trust_remote_code), which vlmsearch does
    not run: its geometry serves the cost and resource models (`vlmsearch check`) only."""

    family = "internvit"

    def _refuse(self) -> PreTrainedModel:
        raise ValueError("InternViT is remote code (its checkpoint's modeling_intern_vit.py), which "
                         "vlmsearch does not run; `vlmsearch check` estimates it, but to train use "
                         "an expert transformers ships (vlmsearch list experts)")

    def build(self, config: PretrainedConfig) -> PreTrainedModel:
        return self._refuse()

    def make_config(self, kwargs: dict[str, Any]) -> PretrainedConfig:
        return self._refuse()

    def load(self, source: str) -> PreTrainedModel:
        return self._refuse()


@ADAPTERS.decorator("convnext", FAMILIES.description("convnext"))
class ConvNextAdapter(FamilyAdapter):
    family = "convnext"

    def read(self, state: Tensor, config: PretrainedConfig, side: int) -> tuple[Tensor, Grid]:
        return _read_map(state)


@ADAPTERS.decorator("generic", FAMILIES.description("generic"))
class GenericAdapter(FamilyAdapter):
    """Any AutoModel with hidden states: (B, C, H, W) maps, or (B, prefix + h*w, C) ViT tokens."""

    def make_config(self, kwargs: dict[str, Any]) -> PretrainedConfig:
        return AutoConfig.for_model(**kwargs)

    def build(self, config: PretrainedConfig) -> PreTrainedModel:
        return AutoModel.from_config(config, trust_remote_code=self.trust_remote_code)

    def load(self, source: str) -> PreTrainedModel:
        return AutoModel.from_pretrained(source, dtype=torch.float32,
                                         trust_remote_code=self.trust_remote_code)

    def read(self, state: Tensor, config: PretrainedConfig, side: int) -> tuple[Tensor, Grid]:
        if state.dim() == 4:
            return _read_map(state)
        patch = getattr(config, "patch_size", None)
        h = side // patch if isinstance(patch, int) else int(state.shape[1] ** 0.5)
        if state.shape[1] < h * h:
            raise ValueError(f"{state.shape[1]} tokens cannot hold a {h}x{h} grid")
        return state[:, state.shape[1] - h * h:], (h, h)  # prefix (CLS, registers) dropped


register_adapters(ADAPTERS, FamilyAdapter)  # timm / OpenCLIP families (trials/vlm/expert_sources.py)


def preset_seed(name: str) -> int:
    """A stable seed per preset name (Python's `hash` changes between processes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def resolve_info(source: str, trust_remote_code: bool = False) -> ExpertInfo:
    """Geometry of a preset, a known id, a local directory, a timm / OpenCLIP source, or (through
    its config) any HF id."""
    if not trust_remote_code and needs_remote_code(source):
        raise remote_code_refused(source)
    info = expert_info(source)
    if info is not None:
        return info
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if not trust_remote_code and "trust_remote_code" in str(exc):
            raise remote_code_refused(source) from exc
        raise
    return info_from_config(config.to_dict())


def _build_preset(name: str, image_size: int | None) -> tuple[PreTrainedModel, str]:
    info = PRESETS.get(name)
    adapter = ADAPTERS.get(info.family)()
    kwargs = dict(info.config)
    if adapter.fixed_image_size and image_size:  # random weights: build at the asked size
        kwargs["image_size"] = image_size
    seed = preset_seed(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = adapter.build(adapter.make_config(kwargs))
    config_hash = _digest(json.dumps(kwargs, sort_keys=True).encode())  # HF init code may change
    return model, f"preset:{name}@seed={seed}#{config_hash}:transformers-{transformers.__version__}"


def _checkpoint_identity(source: str) -> str:
    """Resolved config path (a hub snapshot names its commit) + hash of config and weight files."""
    config_file = Path(os.path.abspath(cached_file(source, "config.json")))
    parts = [config_file.read_bytes()]
    for weights in sorted(config_file.parent.glob("*.safetensors")) + sorted(
            config_file.parent.glob("*.bin")):
        stat = weights.stat()
        parts.append(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"checkpoint:{config_file.parent}#{_digest(b'|'.join(parts))}"


def _lora_expert(model: PreTrainedModel) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=EXPERT_LORA_RANK, lora_alpha=2 * EXPERT_LORA_RANK, lora_dropout=0.0,
                      target_modules="all-linear")
    return get_peft_model(model, lora)  # the base stays frozen; the adapters train


EXPERT_LORA_RANK = 8
EXPERT_TRAIN_MODES: Registry[Any] = Registry("expert train mode")
EXPERT_TRAIN_MODES.register("frozen", lambda model: model, "no parameter trains; features cached")
EXPERT_TRAIN_MODES.register("lora", _lora_expert, f"LoRA (rank {EXPERT_LORA_RANK}) on every linear layer")
EXPERT_TRAIN_MODES.register("full", lambda model: model.requires_grad_(True), "every parameter trains")


class Expert(nn.Module):
    """A vision expert: uint8 images (B, 3, H, W) -> one `Features` per selected layer. Frozen
    unless its `train` mode says otherwise (then it runs with gradients, never from the cache)."""

    def __init__(self, cfg: ExpertConfig, random_weights: bool = False) -> None:
        super().__init__()
        self.cfg, self.random_weights = cfg, random_weights
        self.info = resolve_info(cfg.source, cfg.trust_remote_code)
        self.image_size = cfg.image_size or self.info.image_size
        self.adapter = ADAPTERS.get(self.info.family)().setup(cfg, self.image_size, self.info.image_size)
        self.layers = self._check_layers(cfg.layer_list)
        self.model, self.identity = self._make(cfg.source)
        self.layer_widths = tuple(self.info.layer_width(i) for i in self.layers)
        self.processing = (Processing(self.adapter.mean, self.adapter.std) if cfg.source in PRESETS
                           else self.adapter.processing(cfg.source, self.model))
        if self.processing.file is not None:  # its features depend on it: part of the identity
            self.identity += f"+processor#{_digest(self.processing.file.read_bytes())}"
        self.register_buffer("mean", torch.tensor(self.processing.mean).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(self.processing.std).view(1, 3, 1, 1), False)
        self.requires_grad_(False)
        self.model = EXPERT_TRAIN_MODES.get(cfg.train)(self.model)
        self.eval()

    @property
    def trains(self) -> bool:
        return self.cfg.train != "frozen"

    def _make(self, source: str) -> tuple[PreTrainedModel, str]:
        if source in PRESETS:
            return _build_preset(source, self.cfg.image_size)
        if self.adapter.fixed_image_size and self.image_size != self.info.image_size:
            raise ValueError(f"{source} takes {self.info.image_size}px input only; "
                             f"set image_size: {self.info.image_size} or leave it out")
        if self.random_weights:
            return self._from_config(source)
        return self.adapter.load(source), self.adapter.identity(source)

    def _from_config(self, source: str) -> tuple[PreTrainedModel, str]:
        """The checkpoint's architecture with random weights (benchmarks, the meta device)."""
        if not self.info.config:
            raise ValueError(f"the config of {source} is not known without downloading it; name a "
                             "local checkpoint directory or a known checkpoint")
        model = self.adapter.build(self.adapter.make_config(dict(self.info.config)))
        config_hash = _digest(json.dumps(self.info.config, sort_keys=True).encode())
        return model, f"random:{source}#{config_hash}"

    def _check_layers(self, layers: tuple[int | str, ...]) -> tuple[int | str, ...]:
        for index in layers:
            if isinstance(index, str) and not self.info.depth_ok(index):
                raise ValueError(f"layer {index}: {self.cfg.source} ({self.info.family}) has no neck; "
                                 "only SAM experts do, so select a block index instead")
            if not self.info.depth_ok(index):
                raise ValueError(f"layer {index} is beyond {self.cfg.source}'s depth: it has "
                                 f"{self.info.num_layers} layers, so use an index from "
                                 f"-{self.info.num_layers + 1} to {self.info.num_layers}")
        return layers

    def train(self, mode: bool = True) -> Expert:
        """The HF model stays in eval mode (no dropout) whatever the parent asks."""
        super().train(mode)
        self.model.eval()
        return self

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) -> normalised float (B, 3, S, S) at the expert's input side, as its
        checkpoint's processor prepares it (see trials.vlm.processing)."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise TypeError(f"expected a uint8 (B, 3, H, W) batch, got {images.dtype} "
                            f"{tuple(images.shape)}")
        x = self.processing.view(images.to(self.mean.device, torch.float32) / 255.0, self.image_size)
        return ((x - self.mean) / self.std).to(self.model.dtype)

    def forward(self, images: Tensor, inject: Inject | None = None) -> list[Features]:
        """`inject`: adapters between the blocks (see `FamilyAdapter.inject`); gradients then
        flow through the frozen blocks after them to the adapters."""
        pixels = self.preprocess(images)
        hooks = self.adapter.inject(self.model, inject, pixels.shape[-1]) if inject else nullcontext()
        with torch.set_grad_enabled((self.trains or bool(inject)) and torch.is_grad_enabled()), hooks:
            states = self.adapter.select(self.model, pixels, self.layers)
        return [Features(*state) for state in states]


def reduced_widths(cfg: ExpertConfig, info: ExpertInfo) -> list[int]:
    """Channels of each selected layer after the expert's reduction (unshuffle widens)."""
    return [width for _, width in layer_shapes(cfg, info)]


def out_width(cfg: ExpertConfig) -> int:
    """Channels of the expert's tokens after reduction and layer merge (no model is built)."""
    info = resolve_info(cfg.source, cfg.trust_remote_code)
    return MERGE_MODULES.get(cfg.merge).width_after(reduced_widths(cfg, info))


class ExpertTokens(nn.Module):
    """One expert's whole pipeline: frozen layers -> reduced to the final grid -> trainable merge.

    The output grid equals `search_space.cost.expert_grid(cfg)`, its width `out_width(cfg)`.
    With a tile layout (`tiling`, the design's: `search_space.cost.fusion_plan`) `features` runs
    the expert on each sample's tiles and folds them per sample (`trials.vlm.tiling.fold`);
    `untiled` unfolds them to (B * T) images again for the merge and the fusion.
    """

    def __init__(self, cfg: ExpertConfig, expert: Expert | None = None,
                 random_weights: bool = False, tiling: TileLayout | None = None) -> None:
        super().__init__()
        self.cfg, self.tiling = cfg, tiling
        self.expert = expert if expert is not None else Expert(cfg, random_weights)
        self.merge = MERGE_MODULES.get(cfg.merge)(reduced_widths(cfg, self.expert.info), cfg.merge_grid)
        self.out_width = self.merge.out_width
        self.reduction = resolved_reduction(cfg, self.expert.info)  # a `reduce` mapping as tokens + name

    def pool(self, layers: list[Features]) -> list[Features]:
        """The selected layers on the final grid (frozen and cacheable): each (B, h*w, C_i),
        reduced by the expert's `reduce` (C_i widened by r^2 under unshuffle)."""
        r = self.reduction
        return reduce_layers(layers, r.tokens, r.reduce, r.merge_grid)

    def features(self, images: Tensor, inject: Inject | None = None) -> list[Features]:
        """The frozen part for uint8 images: expert forward (`inject`: adapters inside), `pool`
        (tiled: on each tile, folded to one row per sample)."""
        if self.tiling is None:
            return self.pool(self.expert(images, inject) if inject else self.expert(images))
        tiles = tile_images(images, self.tiling)  # (B*T, 3, t, t)
        return fold(self.pool(self.expert(tiles, inject) if inject else self.expert(tiles)),
                    self.tiling.images)

    def untiled(self, layers: list[Features]) -> list[Features]:
        """`features`' layers with one row per image (tiled: (B * T, n, C); else as they are)."""
        return layers if self.tiling is None else unfold(layers, self.tiling.images)

    def reduce(self, layers: list[Features]) -> Features:
        """Pool and merge raw layer features (the whole pipeline after the expert)."""
        return self.merge(self.pool(layers))

    def forward(self, images: Tensor) -> Features:
        return self.reduce(self.expert(images))  # (B, h*w, out_width)
