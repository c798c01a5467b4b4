"""Parity of the two concatenations with the official code, on the same random weights (fp32).

- channel_concat against EAGLE: NVlabs/EAGLE @ fef95f103b5e9899acbbe2c237e5b99147ab7e8e,
  eagle/model/multimodal_encoder/multi_backbone_channel_concatenation_encoder.py,
  `MultiBackboneChannelConcatenationVisionTower.forward` (each tower's tokens, or map, resized
  bilinearly with align_corners=True to grid_size x grid_size unless already that many tokens,
  concatenated on channels), then LLaVA's `mlp2x_gelu` projector
  (haotian-liu/LLaVA, llava/model/multimodal_projector/builder.py).
- sequence_concat with interleave against LEO: Mozhgan91/LEO @ d2787c646e931041b08635f23f722db6e077203b,
  leo_chat/leo/model/leo_chat/modeling_leo_chat.py (`mlp1` / `mlp2` per encoder, then
  `merged[:, 0::2] = vit_embeds_1; merged[:, 1::2] = vit_embeds_2`), the projector of
  leo_chat/leo/model/projector/modeling_projector.py (LayerNorm, Linear, GELU, Linear).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space.fusions import ChannelConcat, SequenceConcat
from trials.vlm.fusion import build_fusion
from trials.vlm.reduce import Features

D = 32


def eagle_forward(features: list[Tensor], grid_size: int) -> Tensor:
    """The body of EAGLE's forward after each tower ran (the towers' outputs given)."""
    num_tokens = grid_size ** 2
    out = []
    for feature in features:
        if len(feature.shape) == 3:  # b, n, c
            b, n, c = feature.shape
            if n == num_tokens:
                out.append(feature)
                continue
            w = h = int(n ** 0.5)
            feature = feature.transpose(1, 2).reshape(b, c, h, w)
        else:
            b, c, h, w = feature.shape
        if w != grid_size:
            feature = F.interpolate(feature.float(), size=(grid_size, grid_size), mode="bilinear",
                                    align_corners=True)
        out.append(feature.flatten(2, 3).transpose(1, 2))
    return torch.cat(out, dim=-1)


@pytest.mark.parametrize("grid", [4, 6])
def test_channel_concat_equals_eagle(grid: int) -> None:
    g = torch.Generator().manual_seed(0)
    clip = torch.randn(2, 36, 24, generator=g)          # a ViT's tokens, 6x6
    sam = torch.randn(2, 16, 8, 8, generator=g)         # a map, 8x8 (channels first)
    convnext = torch.randn(2, 16, 32, generator=g)      # tokens, 4x4
    torch.manual_seed(1)
    ours = build_fusion(ChannelConcat(grid=grid), [24, 16, 32], D, "mlp2x_gelu")
    reference = nn.Sequential(nn.Linear(72, D), nn.GELU(), nn.Linear(D, D))  # LLaVA's mlp2x_gelu
    reference.load_state_dict(ours.proj.state_dict())
    feats = [Features(clip, (6, 6)), Features(sam.flatten(2).transpose(1, 2), (8, 8)),
             Features(convnext, (4, 4))]
    got = ours(feats)
    expected = reference(eagle_forward([clip, sam, convnext], grid))
    assert got.grids == [(grid, grid)]
    assert torch.allclose(got.tokens, expected, atol=1e-5)


class LeoMLP(nn.Module):
    """LEO's projector as modeling_projector.py writes it (a flat Sequential of four)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(),
                                 nn.Linear(out_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


def test_interleaved_sequence_concat_equals_leo() -> None:
    g = torch.Generator().manual_seed(0)
    vit1 = torch.randn(2, 16, 40, generator=g)  # InternViT after unshuffle, 4x4
    vit2 = torch.randn(2, 16, 24, generator=g)  # SAM after unshuffle, 4x4
    torch.manual_seed(1)
    ours = build_fusion(SequenceConcat(interleave=True), [40, 24], D, ("ln_mlp2x_gelu", "ln_mlp2x_gelu"))
    mlp1, mlp2 = LeoMLP(40, D), LeoMLP(24, D)
    mlp1.mlp.load_state_dict(ours.projs[0].state_dict())
    mlp2.mlp.load_state_dict(ours.projs[1].state_dict())
    e1, e2 = mlp1(vit1), mlp2(vit2)
    merged = torch.empty(2, 32, D)
    merged[:, 0::2] = e1
    merged[:, 1::2] = e2
    got = ours([Features(vit1, (4, 4)), Features(vit2, (4, 4))])
    assert got.grids == [(4, 8)]
    assert torch.allclose(got.tokens, merged, atol=1e-5)
