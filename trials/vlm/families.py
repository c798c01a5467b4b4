"""The families of vision experts: how each is built, loaded, run, and read as per-layer token
grids (REFERENCE.md, "Experts"), registered by family name in `ADAPTERS`.

Every family yields, per hidden state, tokens (B, N, C) on a grid (h, w) with CLS/register
tokens dropped; index 0 = embeddings, -1 = last block. timm and OpenCLIP families register from
trials/vlm/expert_sources.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
import transformers
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import cached_file

from search_space import FAMILIES, NECK, ExpertConfig, Registry
from trials.vlm.expert_sources import register_adapters
from trials.vlm.processing import Processing, processing
from trials.vlm.reduce import Grid

# transformers 5 draws a "Loading weights" bar per from_pretrained: one per expert per trial, on
# the search's stderr under its own progress view; the search says what it loads instead
transformers.utils.logging.disable_progress_bar()

__all__ = ["ADAPTERS", "CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD", "FamilyAdapter",
           "Inject", "checkpoint_identity", "digest"]

# block k (1-based) -> what replaces hidden state k: fn(patch tokens (B, h*w, C), grid) -> (B, h*w, C)
Inject = Mapping[int, Callable[[Tensor, Grid], Tensor]]

def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def checkpoint_identity(source: str) -> str:
    """Resolved config path (a hub snapshot names its commit) + hash of config and weight files."""
    config_file = Path(os.path.abspath(cached_file(source, "config.json")))
    parts = [config_file.read_bytes()]
    for weights in sorted(config_file.parent.glob("*.safetensors")) + sorted(
            config_file.parent.glob("*.bin")):
        stat = weights.stat()
        parts.append(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"checkpoint:{config_file.parent}#{digest(b'|'.join(parts))}"


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
        return checkpoint_identity(source)

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
