"""What vlmsearch knows about experts without loading them: presets and well-known checkpoints.

Both `search_space` (cost model, checks) and `trials` (building the models) read this table,
so it lives here, torch-free. `trials` builds each preset from `config` with the named HF class.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any

from search_space.errors import InvalidDesign
from search_space.registry import Registry

NECK = "neck"  # the layer name of SAM's neck (`SamVisionModel(...).last_hidden_state`)


@dataclass(frozen=True)
class ExpertInfo:
    """Geometry of one vision expert: enough to predict token grids and validate layers."""

    family: str                    # a key of FAMILIES: clip, siglip, dinov2, sam, convnext, mae, ...
    hf_class: str                  # transformers class name
    image_size: int                # native input side
    patch_size: int                # ViT patch side; for ConvNeXt the stem stride
    num_layers: int                # blocks (stages for ConvNeXt); hidden_states has num_layers + 1
    width: int                     # channels of the last layer
    fixed_image_size: bool = False  # SAM: the config fixes the input side
    stage_strides: tuple[int, ...] = ()  # ConvNeXt: stride of hidden_states[i]
    stage_widths: tuple[int, ...] = ()   # ConvNeXt: channels of hidden_states[i]
    neck_width: int = 0            # SAM: channels of the neck (`last_hidden_state`); 0: no neck
    config: dict[str, Any] = field(default_factory=dict, compare=False)  # its HF (vision) config

    def depth_ok(self, index: int | str) -> bool:
        """HF hidden-state index: 0 = embeddings, -1 = last block; "neck" where there is one."""
        if isinstance(index, str):
            return index == NECK and self.neck_width > 0
        return -(self.num_layers + 1) <= index <= self.num_layers

    def grid(self, layer: int | str, image_size: int | None = None) -> tuple[int, int]:
        """Token grid (h, w) of hidden state `layer` at `image_size` (CLS/registers excluded);
        the neck keeps the last block's grid."""
        side = image_size or self.image_size
        if isinstance(layer, str):
            layer = -1
        if self.stage_strides:
            stride = self.stage_strides[layer % (self.num_layers + 1)]
            return side // stride, side // stride
        return side // self.patch_size, side // self.patch_size

    def layer_width(self, layer: int | str) -> int:
        if isinstance(layer, str):
            if not self.neck_width:
                raise InvalidDesign(f"a {self.family} expert has no {layer}; only SAM experts do")
            return self.neck_width
        if self.stage_widths:
            return self.stage_widths[layer % (self.num_layers + 1)]
        return self.width


@dataclass(frozen=True)
class Family:
    """A family of HF vision models and what sets it apart (documented in REFERENCE.md)."""

    hf_class: str
    description: str


FAMILIES: Registry[Family] = Registry("expert family")
for _name, _cls, _desc in [
    ("clip", "CLIPVisionModel", "CLIP ViT; CLS dropped; position embeddings interpolated"),
    ("siglip", "SiglipVisionModel", "SigLIP ViT; no CLS; position embeddings interpolated"),
    ("dinov2", "Dinov2Model", "DINOv2 ViT; CLS and registers dropped; interpolates itself"),
    ("sam", "SamVisionModel", "SAM ViT image encoder; fixed input size; channels-last states"),
    ("convnext", "ConvNextModel", "ConvNeXt; hidden states are stage maps (stride 4..32)"),
    ("mae", "ViTMAEModel", "MAE ViT; run with mask_ratio=0 so no token is dropped"),
    ("internvit", "InternVisionModel", "InternViT (LEO, InternVL): remote code, geometry and costs only"),
    ("generic", "AutoModel", "any HF vision model that returns hidden states"),
]:
    FAMILIES.register(_name, Family(_cls, _desc), _desc)


PRESETS: Registry[ExpertInfo] = Registry("expert preset")
_TINY_VIT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
             "num_attention_heads": 4}


def _vit(family: str, hf_class: str, image: int, patch: int, extra: dict[str, Any]) -> ExpertInfo:
    config = {**_TINY_VIT, "image_size": image, "patch_size": patch, **extra}
    return ExpertInfo(family, hf_class, image, patch, config["num_hidden_layers"],
                      config["hidden_size"], config=config)


for _name, _info, _desc in [
    ("tiny-clip", _vit("clip", "CLIPVisionModel", 96, 8, {}), "CLIP ViT, 4 layers, 64 wide, 12x12 @96"),
    ("tiny-siglip", _vit("siglip", "SiglipVisionModel", 96, 8, {}),
     "SigLIP ViT, 4 layers, 64 wide, 12x12 @96"),
    ("tiny-dinov2", _vit("dinov2", "Dinov2Model", 112, 14, {"hidden_size": 48,
                                                            "intermediate_size": 96,
                                                            "num_attention_heads": 4}),
     "DINOv2 ViT, 4 layers, 48 wide, 8x8 @112"),
    ("tiny-mae", _vit("mae", "ViTMAEModel", 96, 8, {"mask_ratio": 0.0}),
     "MAE ViT, 4 layers, 64 wide, 12x12 @96"),
    ("tiny-sam", ExpertInfo("sam", "SamVisionModel", 128, 16, 2, 32, fixed_image_size=True, neck_width=32,
                            config={"hidden_size": 32, "output_channels": 32,
                                    "num_hidden_layers": 2, "num_attention_heads": 2,
                                    "image_size": 128, "patch_size": 16, "mlp_dim": 64,
                                    "window_size": 4, "global_attn_indexes": [1]}),
     "SAM ViT encoder, 2 layers, 32 wide, 8x8 @128 (input size fixed)"),
    ("tiny-convnext", ExpertInfo("convnext", "ConvNextModel", 96, 4, 4, 128,
                                 stage_strides=(4, 4, 8, 16, 32),
                                 stage_widths=(16, 16, 32, 64, 128),
                                 config={"hidden_sizes": [16, 32, 64, 128],
                                         "depths": [1, 1, 1, 1], "image_size": 96}),
     "ConvNeXt, 4 stages 16..128 wide, grids 24/24/12/6/3 @96"),
]:
    PRESETS.register(_name, _info, _desc)


# Real checkpoints named in the examples: geometry and the vision part of their published
# `config.json` (what `vision_cost` reads; fields left out are the HF class defaults), so the
# cost model and checks work on a laptop that cannot download them. Sources, per entry:
# the checkpoint's config.json on the Hugging Face Hub as mirrored in public code, and the
# transformers conversion scripts that wrote them (models/<family>/convert_*.py).
_CLIP_L14 = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
             "num_attention_heads": 16, "patch_size": 14, "projection_dim": 768,
             "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
_SAM = {"output_channels": 256, "patch_size": 16, "image_size": 1024, "window_size": 14,
        "qkv_bias": True, "use_abs_pos": True, "use_rel_pos": True, "mlp_ratio": 4.0,
        "hidden_act": "gelu", "layer_norm_eps": 1e-6, "num_pos_feats": 128}
KNOWN_CHECKPOINTS: dict[str, ExpertInfo] = {
    # vision_config of openai/clip-vit-large-patch14-336 (also transformers' LLaVA-NeXT default)
    "openai/clip-vit-large-patch14-336": ExpertInfo("clip", "CLIPVisionModel", 336, 14, 24, 1024,
                                                    config={**_CLIP_L14, "image_size": 336}),
    # vision_config of openai/clip-vit-large-patch14 (ViT-L/14 at 224)
    "openai/clip-vit-large-patch14": ExpertInfo("clip", "CLIPVisionModel", 224, 14, 24, 1024,
                                                config={**_CLIP_L14, "image_size": 224}),
    # vision_config of openai/clip-vit-base-patch16 (ViT-B/16)
    "openai/clip-vit-base-patch16": ExpertInfo("clip", "CLIPVisionModel", 224, 16, 12, 768, config={
        "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12, "patch_size": 16, "image_size": 224, "projection_dim": 512,
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}),
    # vision_config of google/siglip-so400m-patch14-384 (as copied into LLaVA-OneVision configs)
    "google/siglip-so400m-patch14-384": ExpertInfo("siglip", "SiglipVisionModel", 384, 14, 27,
                                                   1152, config={
        "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
        "num_attention_heads": 16, "patch_size": 14, "image_size": 384,
        "model_type": "siglip_vision_model", "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6}),
    # facebook/dinov2-large config.json (convert_dinov2_to_hf.py: vitl14, image_size 518)
    "facebook/dinov2-large": ExpertInfo("dinov2", "Dinov2Model", 224, 14, 24, 1024, config={
        "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "mlp_ratio": 4,
        "patch_size": 14, "image_size": 518, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
        "layerscale_value": 1.0, "qkv_bias": True, "use_swiglu_ffn": False}),
    # facebook/dinov2-base config.json (convert_dinov2_to_hf.py: vitb14, image_size 518)
    "facebook/dinov2-base": ExpertInfo("dinov2", "Dinov2Model", 224, 14, 12, 768, config={
        "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "mlp_ratio": 4,
        "patch_size": 14, "image_size": 518, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
        "layerscale_value": 1.0, "qkv_bias": True, "use_swiglu_ffn": False}),
    # vision_config of facebook/sam-vit-base (convert_sam_to_hf.py: sam_vit_b, the defaults)
    "facebook/sam-vit-base": ExpertInfo("sam", "SamVisionModel", 1024, 16, 12, 768,
                                        fixed_image_size=True, neck_width=256, config={
        **_SAM, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "mlp_dim": 3072, "global_attn_indexes": [2, 5, 8, 11]}),
    # vision_config of facebook/sam-vit-large (convert_sam_to_hf.py: sam_vit_l)
    "facebook/sam-vit-large": ExpertInfo("sam", "SamVisionModel", 1024, 16, 24, 1024,
                                         fixed_image_size=True, neck_width=256, config={
        **_SAM, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
        "mlp_dim": 4096, "global_attn_indexes": [5, 11, 17, 23]}),
    # facebook/convnext-large-224 config.json (convert_convnext_to_pytorch.py: large)
    "facebook/convnext-large-224": ExpertInfo("convnext", "ConvNextModel", 224, 4, 4, 1536,
                                              stage_strides=(4, 4, 8, 16, 32),
                                              stage_widths=(192, 192, 384, 768, 1536), config={
        "hidden_sizes": [192, 384, 768, 1536], "depths": [3, 3, 27, 3], "num_stages": 4,
        "patch_size": 4, "image_size": 224, "hidden_act": "gelu", "layer_scale_init_value": 1e-6,
        "layer_norm_eps": 1e-12}),
    # facebook/vit-mae-large config.json (convert_vit_mae_to_pytorch.py: large); the decoder
    # fields belong to ViTMAEForPreTraining and do not change ViTMAEModel
    "facebook/vit-mae-large": ExpertInfo("mae", "ViTMAEModel", 224, 16, 24, 1024, config={
        "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
        "num_attention_heads": 16, "patch_size": 16, "image_size": 224, "hidden_act": "gelu",
        "qkv_bias": True, "layer_norm_eps": 1e-12, "mask_ratio": 0.75}),
    # OpenGVLab/InternViT-300M-448px config.json (LEO's first encoder; model_type intern_vit_6b,
    # remote code: LEO's configuration_intern_vit.py / modeling_intern_vit.py at d2787c6):
    # 24 pre-LN blocks with layer scale, 1024 wide, patch 14 at 448 px -> 32x32 (+ CLS)
    "OpenGVLab/InternViT-300M-448px": ExpertInfo("internvit", "InternVisionModel", 448, 14, 24, 1024,
                                                 config={
        "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
        "num_attention_heads": 16, "patch_size": 14, "image_size": 448, "num_channels": 3,
        "qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm",
        "layer_norm_eps": 1e-6, "hidden_act": "gelu", "initializer_factor": 0.1,
        "model_type": "intern_vit_6b"}),
}

_CLASS_FAMILY = {family.hf_class: name for name, family in FAMILIES.items()}
_MODEL_TYPE_FAMILY = {"clip_vision_model": "clip", "clip": "clip", "siglip_vision_model": "siglip",
                      "siglip": "siglip", "dinov2": "dinov2", "sam_vision_model": "sam",
                      "sam": "sam", "convnext": "convnext", "vit_mae": "mae",
                      "intern_vit_6b": "internvit"}


def info_from_config(config: dict[str, Any]) -> ExpertInfo:
    """Geometry from an HF `config.json` (a local checkpoint directory), without torch; the
    (vision) config read is kept in `config` for the resource model."""
    vision = config.get("vision_config") or config
    family = _MODEL_TYPE_FAMILY.get(vision.get("model_type", ""), "generic")
    archs = config.get("architectures") or []
    family = _CLASS_FAMILY.get(archs[0], family) if archs else family
    if family == "convnext":
        widths = tuple(vision["hidden_sizes"])
        return ExpertInfo(family, FAMILIES.get(family).hf_class, vision.get("image_size", 224), 4,
                          len(widths), widths[-1], stage_strides=(4, 4, 8, 16, 32)[: len(widths) + 1],
                          stage_widths=(widths[0], *widths), config=dict(vision))
    sam = family == "sam"
    return ExpertInfo(family, FAMILIES.get(family).hf_class, vision.get("image_size", 224),
                      vision.get("patch_size", 16), vision.get("num_hidden_layers", 12),
                      vision.get("hidden_size", 768), fixed_image_size=sam,
                      neck_width=vision.get("output_channels", 256) if sam else 0,
                      config=dict(vision))


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).expanduser().exists()


def expert_info(source: str) -> ExpertInfo | None:
    """What is known about `source` without downloading: a preset, a known id, a local config,
    a `timm:` / `open_clip:` source (search_space/sources.py)."""
    if _sources.is_source_ref(source):
        return _sources.source_info(source)
    if source in PRESETS:
        return PRESETS.get(source)
    if source in KNOWN_CHECKPOINTS:
        return KNOWN_CHECKPOINTS[source]
    config_file = os.path.join(os.path.expanduser(source), "config.json")  # not pathlib: called often
    try:
        stat = os.stat(config_file)
    except (OSError, ValueError):
        return None
    if not S_ISREG(stat.st_mode):
        return None
    return _local_info(config_file, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _local_info(config_file: str, mtime_ns: int, size: int) -> ExpertInfo:
    """A local checkpoint's geometry, read once per version of its config.json (a space's cost
    model asks for it thousands of times); errors are not cached."""
    config = read_config(Path(config_file))
    try:
        return info_from_config(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{config_file} lacks what its family needs ({type(exc).__name__}: {exc}); "
                         "is it a complete HF config.json? Save the model again with "
                         "save_pretrained") from None


def read_config(file: Path) -> dict[str, Any]:
    """A checkpoint's config.json as a JSON object; ValueError naming the file otherwise."""
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file} is not readable JSON ({exc}); save the model again with "
                         "save_pretrained, or fix the file") from None
    if not isinstance(config, dict):
        raise ValueError(f"{file} holds a JSON {type(config).__name__}, not an object; it is not an "
                         "HF config.json") from None
    return config


# timm / OpenCLIP experts: their families and geometry (imported last: it reads this module)
from search_space import sources as _sources  # noqa: E402

LM_PRESETS: Registry[dict[str, Any]] = Registry("language model preset")
LM_PRESETS.register(
    "tiny-llama",
    # initializer_range 0.1 (HF default 0.02): trained from scratch in a short budget, the tiny
    # LM learns to read visual tokens in ~300 steps instead of >1000 (docs/BENCHMARKS.md).
    {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
     "initializer_range": 0.1},
    "Llama architecture, 2 layers, 64 wide, word-level tokenizer (no download)",
)
