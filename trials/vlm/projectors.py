"""Projectors from an expert's (or a fused) width to the LM width, keyed by the YAML name.

REFERENCE.md, "Projectors": `linear`; `mlp2x_gelu` = Linear(C -> d), GELU, Linear(d -> d)
(LLaVA-1.5); `ln_mlp2x_gelu` puts a LayerNorm(C) first (LEO). Fusion operators build them per
expert or shared, by name.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from search_space import Registry

__all__ = ["PROJECTOR_MODULES", "ProjectorFactory", "linear", "ln_mlp2x_gelu", "make_projector", "mlp2x_gelu"]

ProjectorFactory = Callable[[int, int], nn.Module]  # (in_dim, out_dim) -> module on (..., in_dim)

PROJECTOR_MODULES: Registry[ProjectorFactory] = Registry("projector")


@PROJECTOR_MODULES.decorator("linear", "Linear(C -> d)")
def linear(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Linear(in_dim, out_dim)


@PROJECTOR_MODULES.decorator("mlp2x_gelu", "Linear(C -> d), GELU, Linear(d -> d) (LLaVA-1.5)")
def mlp2x_gelu(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


@PROJECTOR_MODULES.decorator("ln_mlp2x_gelu", "LayerNorm(C), Linear(C -> d), GELU, Linear(d -> d) (LEO)")
def ln_mlp2x_gelu(in_dim: int, out_dim: int) -> nn.Module:
    """Flat, as LEO's `MLP` is (children 0-3), so its checkpoints' keys load as they are."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(),
                         nn.Linear(out_dim, out_dim))


def make_projector(name: str, in_dim: int, out_dim: int) -> nn.Module:
    """The projector `name`, (..., in_dim) -> (..., out_dim); an unknown name says "did you mean"."""
    return PROJECTOR_MODULES.get(name)(in_dim, out_dim)
