"""Experts from timm and OpenCLIP, and remote-code HF experts only when asked.

Weights cannot be downloaded here: each test builds a tiny model from its library's config with
random weights, saves it as the library saves it, and loads it back by path through the code
real names take (`timm.create_model` / `open_clip.create_model`). The timm / OpenCLIP tests
skip where those libraries cannot be imported (their torchvision must match torch).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from search_space import ExpertConfig, TrialConfig, expert_info
from search_space.resources.estimate import CannotEstimate, _info
from search_space.sources import parse_source
from trials.vlm.expert_sources import SourceModel
from trials.vlm.experts import Expert, ExpertTokens, resolve_info

IMAGES = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


# ---- torch-free geometry ----------------------------------------------------------------------


@pytest.mark.parametrize(("source", "family", "side", "layers", "width", "grid"), [
    ("timm:eva02_large_patch14_clip_336", "timm_vit", 336, 24, 1024, (24, 24)),          # EAGLE
    ("open_clip:convnext_large_d_320", "timm_convnext", 320, 4, 1536, (10, 10)),         # MGM
    ("open_clip:convnext_xxlarge", "timm_convnext", 256, 4, 3072, (8, 8)),               # Cambrian
    ("open_clip:ViT-L-14-336@openai", "open_clip_vit", 336, 24, 1024, (24, 24)),
    ("timm:convnext_large_mlp.clip_laion2b_ft_320", "timm_convnext", 320, 4, 1536, (10, 10)),
])
def test_paper_experts_have_known_geometry(source: str, family: str, side: int, layers: int, width: int,
                                           grid: tuple[int, int]) -> None:
    info = expert_info(source)
    assert (info.family, info.image_size, info.num_layers, info.width, info.grid(-1)) == (
        family, side, layers, width, grid)
    if family == "timm_convnext":  # stem, then 4 stages: strides 4, 4, 8, 16, 32
        assert info.grid(0) == info.grid(1) == (side // 4, side // 4)


def test_bad_sources_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="timm:<model name or dir>"):
        ExpertConfig(source="timm:")
    with pytest.raises(ValueError, match="unknown OpenCLIP model config 'convnext_huge'"):
        expert_info("open_clip:convnext_huge")
    with pytest.raises(ValueError, match="model_args"):
        expert_info("timm:resnet_unheard_of")
    with pytest.raises(ValueError, match=r"no config\.json"):
        expert_info("timm:/nonexistent/dir")
    assert parse_source("open_clip:ViT-L-14@/w/file.bin").pretrained == "/w/file.bin"


def test_families_without_a_cost_formula_get_no_estimate() -> None:
    with pytest.raises(CannotEstimate, match="timm_convnext family"):
        _info(ExpertConfig(source="open_clip:convnext_large_d_320"))


def test_trust_remote_code_keeps_hashes_at_its_default() -> None:
    plain = TrialConfig(experts={"a": {"source": "tiny-clip"}})
    same = TrialConfig(experts={"a": {"source": "tiny-clip", "trust_remote_code": False}})
    trusted = TrialConfig(experts={"a": {"source": "tiny-clip", "trust_remote_code": True}})
    assert plain.config_hash == same.config_hash == "de305600f62c774b"  # the hash before the field
    assert trusted.config_hash != plain.config_hash


# ---- timm ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm")


def _save_timm(timm, path: Path, name: str, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()
    timm.models.save_for_hf(model, str(path), safe_serialization=True)
    return model


VIT = {"img_size": 40, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}


@pytest.mark.parametrize(("name", "kwargs", "prefix"), [
    ("vit_tiny_patch16_224", {**VIT, "reg_tokens": 2}, 3),       # class + 2 registers
    ("eva02_tiny_patch14_224", {**VIT, "patch_size": 8}, 1),     # EVA-02: rope, SwiGLU
])
def test_timm_vit_by_path_reads_blocks_without_prefix(timm, tmp_path: Path, name: str,
                                                      kwargs: dict, prefix: int) -> None:
    reference = _save_timm(timm, tmp_path, name, **kwargs)
    assert reference.num_prefix_tokens == prefix
    cfg = ExpertConfig(source=f"timm:{tmp_path}", layers=(0, 1, -1))
    expert = Expert(cfg)
    info = expert_info(cfg.source)
    assert (info.family, info.image_size, info.num_layers, info.width) == ("timm_vit", 40, 2, 32)
    features = expert(IMAGES)
    assert [f.grid for f in features] == [info.grid(i) for i in cfg.layer_list] == [(5, 5)] * 3
    assert [f.tokens.shape[-1] for f in features] == list(expert.layer_widths)
    pixels = expert.preprocess(IMAGES)
    with torch.no_grad():  # timm's own reading: block outputs, prefix dropped, NCHW
        blocks = reference.forward_intermediates(pixels, indices=[0, 1], norm=False, intermediates_only=True)
    for ours, theirs in zip(features[1:], blocks, strict=True):
        assert torch.allclose(ours.tokens, theirs.flatten(2).transpose(1, 2), atol=1e-5)
    assert expert.processing.mean == tuple(reference.pretrained_cfg["mean"])


def test_timm_convnext_by_path_reads_stem_and_stages(timm, tmp_path: Path) -> None:
    reference = _save_timm(timm, tmp_path, "convnext_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
    cfg = ExpertConfig(source=f"timm:{tmp_path}", layers=(0, 1, 2, 3, -1), image_size=40)
    expert = Expert(cfg)
    info = expert_info(cfg.source)
    assert info.image_size == 224  # its pretrained cfg's input size
    features = expert(IMAGES)
    assert [f.grid for f in features] == [info.grid(i, 40) for i in cfg.layer_list] == [
        (10, 10), (10, 10), (5, 5), (2, 2), (1, 1)]
    assert [f.tokens.shape[-1] for f in features] == list(expert.layer_widths) == [8, 8, 16, 24, 32]
    with torch.no_grad():
        stages = reference.forward_intermediates(expert.preprocess(IMAGES), intermediates_only=True)
    assert torch.allclose(features[-1].tokens, stages[-1].flatten(2).transpose(1, 2), atol=1e-5)


def test_identity_follows_weights_and_config(timm, tmp_path: Path) -> None:
    _save_timm(timm, tmp_path, "vit_tiny_patch16_224", **VIT)
    source = f"timm:{tmp_path}"
    first = Expert(ExpertConfig(source=source)).identity
    assert first == Expert(ExpertConfig(source=source)).identity
    _save_timm(timm, tmp_path, "vit_tiny_patch16_224", **{**VIT, "num_heads": 4})  # other weights
    second = Expert(ExpertConfig(source=source)).identity
    assert second != first and second.startswith(f"timm:{tmp_path.resolve()}#")


def test_vlm_trains_a_step_with_a_timm_expert(timm, tmp_path: Path) -> None:
    from trials.vlm.model import build_vlm

    _save_timm(timm, tmp_path, "convnext_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
    point = TrialConfig.model_validate({
        "data": {"image_size": 40}, "experts": {"cx": {"source": f"timm:{tmp_path}", "layers": 2,
                                                       "train": "full"}},
        "fusion": {"kind": "channel_concat"}})
    vlm = build_vlm(point)
    params = [p for p in vlm.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    loss = vlm(**vlm.encode(["what is it ?"] * 2, ["red", "3"]), images=IMAGES)
    loss.backward()
    torch.optim.SGD(params, lr=0.1).step()
    net = vlm.experts["cx"].expert.model.net
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in [*net.stem.parameters(), *net.stages[1].parameters()])
    assert all(p.grad is None for p in net.stages[3].parameters())  # past the layer read
    assert any(not torch.equal(a, b) for a, b in zip(before, params, strict=True))


# ---- OpenCLIP ----------------------------------------------------------------------------------


TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 40, "layers": 2, "width": 32, "patch_size": 8,
                                             "head_width": 16},
             "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}


def test_open_clip_vit_by_path_drops_the_class_token(tmp_path: Path) -> None:
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP).eval()
    save_file(model.state_dict(), tmp_path / "open_clip_model.safetensors")
    mean, std = [0.4, 0.4, 0.4], [0.3, 0.3, 0.3]
    (tmp_path / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": TINY_CLIP, "preprocess_cfg": {"mean": mean, "std": std}}))
    cfg = ExpertConfig(source=f"open_clip:{tmp_path}", layers=(0, -1))
    expert = Expert(cfg)
    assert isinstance(expert.model, SourceModel)
    info = resolve_info(cfg.source)
    assert (info.family, info.num_layers, info.width) == ("open_clip_vit", 2, 32)
    features = expert(IMAGES)
    assert [f.grid for f in features] == [info.grid(i) for i in cfg.layer_list] == [(5, 5)] * 2
    assert expert.processing.mean == tuple(mean)
    with torch.no_grad():  # OpenCLIP's own reading of the last block, class token dropped
        out = model.visual.forward_intermediates(expert.preprocess(IMAGES), indices=1,
                                                 intermediates_only=True, output_fmt="NLC")
    last = out["image_intermediates"][-1] if isinstance(out, dict) else out[-1]
    assert torch.allclose(features[-1].tokens, last.reshape(2, 25, 32), atol=1e-5)


# ---- remote code --------------------------------------------------------------------------------


CONFIGURATION = '''
from transformers import PretrainedConfig


class TinyPatchConfig(PretrainedConfig):
    model_type = "tiny_patch_vit"

    def __init__(self, hidden_size=16, patch_size=8, image_size=32, num_hidden_layers=2, **kwargs):
        self.hidden_size, self.patch_size, self.image_size = hidden_size, patch_size, image_size
        self.num_hidden_layers = num_hidden_layers
        super().__init__(**kwargs)
'''
MODELING = '''
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .configuration_tiny import TinyPatchConfig


class TinyPatchModel(PreTrainedModel):
    config_class = TinyPatchConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Conv2d(3, config.hidden_size, config.patch_size, config.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.layers = nn.ModuleList(nn.Linear(config.hidden_size, config.hidden_size)
                                    for _ in range(config.num_hidden_layers))
        self.post_init()

    def forward(self, pixel_values, output_hidden_states=False, **kwargs):
        x = self.embed(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        states = [x]
        for layer in self.layers:
            x = layer(x)
            states.append(x)
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(states))
'''


def test_remote_code_runs_only_with_trust_remote_code(tmp_path: Path) -> None:
    (tmp_path / "configuration_tiny.py").write_text(CONFIGURATION)
    (tmp_path / "modeling_tiny.py").write_text(MODELING)
    config = {"model_type": "tiny_patch_vit", "hidden_size": 16, "patch_size": 8, "image_size": 32,
              "num_hidden_layers": 2, "auto_map": {"AutoConfig": "configuration_tiny.TinyPatchConfig",
                                                   "AutoModel": "modeling_tiny.TinyPatchModel"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    from safetensors.torch import save_file

    layers = {f"layers.{i}.{k}": v for i in range(2)
              for k, v in (("weight", torch.randn(16, 16)), ("bias", torch.zeros(16)))}
    weights = {"embed.weight": torch.randn(16, 3, 8, 8), "embed.bias": torch.zeros(16),
               "cls": torch.randn(1, 1, 16), **layers}
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="trust_remote_code: true"):
        Expert(ExpertConfig(source=str(tmp_path)))
    cfg = ExpertConfig(source=str(tmp_path), layers=(0, -1), trust_remote_code=True)
    tokens = ExpertTokens(cfg)
    assert type(tokens.expert.model).__name__ == "TinyPatchModel"
    assert torch.equal(tokens.expert.model.cls.detach(), weights["cls"])  # its weights, loaded
    features = tokens.expert(IMAGES)
    assert [f.grid for f in features] == [(4, 4), (4, 4)] and features[0].tokens.shape == (2, 16, 16)
