"""Projectors: the registry matches the search space's names, and each maps C -> d."""

from __future__ import annotations

import pytest
import torch

from search_space.components import PROJECTORS
from trials.vlm.projectors import PROJECTOR_MODULES, make_projector


def test_names_match_search_space() -> None:
    assert PROJECTOR_MODULES.names() == PROJECTORS.names()
    with pytest.raises(KeyError, match="did you mean 'mlp2x_gelu'"):
        make_projector("mlp2x_gel", 4, 4)


@pytest.mark.parametrize("name", PROJECTORS.names())
def test_maps_width(name: str) -> None:
    module = make_projector(name, 5, 7)
    out = module(torch.randn(2, 3, 5))  # (B, N, C)
    assert out.shape == (2, 3, 7)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.any() for p in module.parameters())


def test_mlp2x_gelu_is_llava_15() -> None:
    layers = list(make_projector("mlp2x_gelu", 5, 7))
    assert [type(m).__name__ for m in layers] == ["Linear", "GELU", "Linear"]
    assert (layers[0].in_features, layers[0].out_features, layers[2].out_features) == (5, 7, 7)


class LeoMLP(torch.nn.Module):
    """Reference: LEO's per-encoder projector as its official code builds it, written here from
    Mozhgan91/LEO, leo_chat/leo/model/projector/modeling_projector.py (`MLP`), commit
    bd245eae078e19f94227e0e6e4db02dfdabd0eb1: children '0' LayerNorm(C), '1' Linear(C -> d),
    '2' GELU, '3' Linear(d -> d), applied in order; C = the ViT width x (1/downsample)^2."""

    def __init__(self, vit_hidden_size: int, downsample_ratio: float, llm_hidden_size: int) -> None:
        super().__init__()
        width = vit_hidden_size * int(1 / downsample_ratio) ** 2
        self.add_module("0", torch.nn.LayerNorm(width))
        self.add_module("1", torch.nn.Linear(width, llm_hidden_size))
        self.add_module("2", torch.nn.GELU())
        self.add_module("3", torch.nn.Linear(llm_hidden_size, llm_hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x


def test_ln_mlp2x_gelu_equals_leos_projector_on_the_same_weights() -> None:
    torch.manual_seed(0)
    ours = make_projector("ln_mlp2x_gelu", 4 * 24, 40)  # InternViT-like width 24, unshuffled x2
    reference = LeoMLP(24, 0.5, 40)
    with torch.no_grad():  # a LayerNorm that is not the identity
        ours[0].weight.normal_()
        ours[0].bias.normal_()
    reference.load_state_dict(ours.state_dict(), strict=True)  # the same keys: 0.*, 1.*, 3.*
    x = torch.randn(2, 16, 96)  # (B, N, C): 16 tokens after the unshuffle
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)
    assert sum(p.numel() for p in ours.parameters()) == 2 * 96 + 96 * 40 + 40 + 40 * 40 + 40
