"""InternViT's vision trace against a reference forward. InternViT is remote code (transformers
has no class for it), so the reference is restated here from LEO's copy of its modeling code:
Mozhgan91/LEO, leo_chat/leo/model/vision_encoder/intern_vit/modeling_intern_vit.py, commit
d2787c646e931041b08635f23f722db6e077203b (`InternVisionEmbeddings`, `InternAttention` without
qk-normalisation, `InternMLP`, `InternVisionEncoderLayer` with ls1/ls2; no norm after the
encoder). Parameters exact and FLOPs as FlopCounterMode counts them on the meta device (SDPA's
math path, as tests/search_space/test_resources_vision.py counts), at InternViT-300M-448px's
scale and on a small config."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.cost import expert_grid
from search_space.point import ExpertConfig
from search_space.presets import KNOWN_CHECKPOINTS, ExpertInfo
from search_space.resources.vision import trace_vision
from trials.measure import forward_backward_flops

NAME = "OpenGVLab/InternViT-300M-448px"


class Layer(nn.Module):
    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        d, self.heads = c["hidden_size"], c["num_attention_heads"]
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d, bias=c["qkv_bias"])
        self.proj = nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, c["intermediate_size"]), nn.Linear(c["intermediate_size"], d)
        self.ls1 = nn.Parameter(c["initializer_factor"] * torch.ones(d))
        self.ls2 = nn.Parameter(c["initializer_factor"] * torch.ones(d))

    def attn(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x)) * self.ls1
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)))) * self.ls2


class InternVit(nn.Module):
    """Hidden states (embeddings, then each layer), as `output_hidden_states=True` gives them."""

    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        d, p = c["hidden_size"], c["patch_size"]
        self.class_embedding = nn.Parameter(torch.randn(1, 1, d))
        self.patch_embedding = nn.Conv2d(3, d, kernel_size=p, stride=p)
        self.position_embedding = nn.Parameter(torch.randn(1, (c["image_size"] // p) ** 2 + 1, d))
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))

    def forward(self, pixels: Tensor) -> list[Tensor]:
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # (B, N, C)
        x = torch.cat([self.class_embedding.expand(len(pixels), -1, -1), patches], 1)
        states = [x + self.position_embedding]
        for layer in self.layers:
            states.append(layer(states[-1]))
        return states


def check(info: ExpertInfo, device: str) -> None:
    with torch.device(device):
        model = InternVit(info.config).requires_grad_(True)
        pixels = torch.randn(1, 3, info.image_size, info.image_size)
    fwd, bwd = forward_backward_flops(lambda: model(pixels), lambda s: sum(x.float().sum() for x in s))
    cost = trace_vision(info, info.image_size, "full", recompute=False)
    assert cost.params == sum(p.numel() for p in model.parameters()) == cost.trainable
    assert cost.forward == pytest.approx(fwd, rel=0.02)
    assert cost.backward == pytest.approx(bwd, rel=0.02)


def test_internvit_300m_at_paper_scale() -> None:
    info = KNOWN_CHECKPOINTS[NAME]
    check(info, "meta")
    assert 300e6 < trace_vision(info, 448).params < 310e6  # "300M"
    unshuffled = ExpertConfig(source=NAME, tokens=256, reduce="unshuffle")
    assert expert_grid(ExpertConfig(source=NAME)) == (32, 32) and expert_grid(unshuffled) == (16, 16)


def test_internvit_small_config() -> None:
    config = {**KNOWN_CHECKPOINTS[NAME].config, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 56}
    check(ExpertInfo("internvit", "InternVisionModel", 56, 14, 2, 32, config=config), "meta")
