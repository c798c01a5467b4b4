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
