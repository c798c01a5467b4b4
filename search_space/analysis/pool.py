"""A space's pool of experts, each at its first choices: what expert similarity runs and the
experts table describes (a range's first choice, or low end; a point's experts as they are)."""

from __future__ import annotations

from typing import Any

from search_space.point import ExpertConfig
from search_space.ranges import possible_values
from search_space.sampling import compile_space, values
from search_space.space import SearchSpace

__all__ = ["pool_choices", "pool_experts"]


def pool_experts(space: SearchSpace) -> dict[str, ExpertConfig]:
    """Every pool expert (a point: its experts), in YAML order, each field at its first choice."""
    compiled = compile_space(space)
    return {name: ExpertConfig.model_validate(next(values(node, "low")))
            for name, node in compiled.experts.items()}


def pool_choices(space: SearchSpace) -> dict[str, dict[str, list[Any]]]:
    """Every pool expert's fields, each as the values it can take (a fixed field: one value;
    a continuous range: its two ends), in YAML order."""
    return {name: {field: possible_values(getattr(spec, field)) for field in type(spec).model_fields}
            for name, spec in space.pool.items()}
