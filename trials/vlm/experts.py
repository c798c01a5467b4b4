"""Frozen vision experts: build or load an HF vision model, run it, read its layers as tokens.

REFERENCE.md, "Experts": every expert yields, per selected layer, tokens (B, N, C) on a grid
(h, w) with CLS/register tokens dropped; hidden-state index 0 = embeddings, -1 = last block.
A family adapter (trials/vlm/families.py, registered by family name) holds each family's quirks.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from typing import Any

import torch
import transformers
from torch import Tensor, nn
from transformers import AutoConfig, PreTrainedModel

from search_space import (
    PRESETS,
    ExpertConfig,
    ExpertInfo,
    Registry,
    expert_info,
    info_from_config,
    layer_shapes,
    resolved_reduction,
)
from trials.vlm.expert_sources import needs_remote_code, remote_code_refused
from trials.vlm.families import (
    ADAPTERS,
    CLIP_MEAN,
    CLIP_STD,
    FamilyAdapter,
    Inject,
    digest,
)
from trials.vlm.processing import Processing
from trials.vlm.reduce import MERGE_MODULES, Features, reduce_layers
from trials.vlm.tiling import TileLayout, fold, tile_images, unfold

__all__ = ["ADAPTERS", "CLIP_MEAN", "CLIP_STD", "Expert", "ExpertTokens", "FamilyAdapter", "Features",
           "Inject", "out_width", "preset_seed", "reduced_widths", "resolve_info"]




def preset_seed(name: str) -> int:
    """A stable seed per preset name (Python's `hash` changes between processes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


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
    config_hash = digest(json.dumps(kwargs, sort_keys=True).encode())  # HF init code may change
    return model, f"preset:{name}@seed={seed}#{config_hash}:transformers-{transformers.__version__}"


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
            self.identity += f"+processor#{digest(self.processing.file.read_bytes())}"
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
        config_hash = digest(json.dumps(self.info.config, sort_keys=True).encode())
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
