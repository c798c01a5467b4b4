"""A known point as the Optuna parameters under which the compiled space yields it (seed
points: `search.seed_points`, replayed by `ReplayDraw`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from search_space.ranges import FloatRange, IntRange
from search_space.sampling import (
    Cat,
    CompiledSpace,
    Draw,
    Label,
    Node,
    RandomDraw,
    Rec,
    _label,
    values,
)

__all__ = ["ReplayDraw", "point_parameters"]


class ReplayDraw:
    """Answers each decision from a given point, recording the parameters that produce it.

    Decisions the point leaves open (a section a seed point omits) are not recorded, so Optuna
    samples them; `fallback` supplies a value to keep walking.
    """

    def __init__(self, values: dict[str, Label], fallback: Draw) -> None:
        self.values = values
        self.fallback = fallback
        self.params: dict[str, Label] = {}

    def _take(self, name: str, ask: Any) -> Any:
        if name in self.values:
            self.params[name] = self.values[name]
            return self.values[name]
        return ask()

    def categorical(self, name: str, labels: Sequence[Label]) -> Label:
        value = self._take(name, lambda: self.fallback.categorical(name, labels))
        if value not in labels:
            raise ValueError(f"'{name}' = {value!r} is not a choice of the space ({list(labels)})")
        return value

    def integer(self, name: str, r: IntRange) -> int:
        return self._take(name, lambda: self.fallback.integer(name, r))

    def real(self, name: str, r: FloatRange) -> float:
        return self._take(name, lambda: self.fallback.real(name, r))


def _flat_labels(prefix: str, value: Any, out: dict[str, Label]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flat_labels(f"{prefix}.{key}" if prefix else key, item, out)
    else:
        out[prefix] = _label(value)


def _mapping_choices(prefix: str, node: Node, design: dict[str, Any], out: dict[str, Label]) -> None:
    """The label of each field's choice that holds the mapping `design` gives it (`reduce:
    {choices: [pool, {kind: resize, grid: 24}]}`): the one with its value, else with its kind."""
    for key, child in node.fields if isinstance(node, Rec) else ():
        value = design.get(key)
        if not isinstance(value, dict) or not isinstance(child, Cat):
            continue
        held = [list(values(option, "low")) for option in child.options]
        fits = [label for label, vs in zip(child.labels, held, strict=True) if value in vs] or [
            label for label, vs in zip(child.labels, held, strict=True)
            if any(isinstance(v, dict) and v.get("kind") == value.get("kind") for v in vs)]
        if fits:
            out[f"{prefix}.{key}"] = fits[0]


def point_parameters(compiled: CompiledSpace, design: dict[str, Any]) -> dict[str, Label]:
    """The Optuna parameters under which `compiled.sample` yields `design` (a partial point:
    sections it omits stay free). Raises ValueError when the design is outside the space."""
    values: dict[str, Label] = {}
    pool = list(compiled.space.pool)
    chosen = [n for n in pool if n in design.get("experts", {})]
    unknown = [n for n in design.get("experts", {}) if n not in pool]
    if unknown:
        raise ValueError(f"experts {unknown} are not in the pool ({pool})")
    values["experts"] = "+".join(chosen)
    for name in chosen:
        _flat_labels(f"experts.{name}", design["experts"][name], values)
        _mapping_choices(f"experts.{name}", compiled.experts[name], design["experts"][name], values)
    fusion = design.get("fusion")
    if fusion is not None:
        options = compiled.admissible(len(chosen))
        label = next((o.label for o in options if o.kind == fusion["kind"]), None)
        if label is None:
            raise ValueError(f"fusion '{fusion['kind']}' is not a choice of the space for "
                             f"{len(chosen)} experts")
        for fusion_name in ("fusion", "fusion:" + "|".join(o.label for o in options)):
            values[fusion_name] = label
        _flat_labels(f"fusion.{label}" if len(compiled.fusions) > 1 else "fusion",
                     {k: v for k, v in fusion.items() if k != "kind"}, values)
    for key in ("language_model", "projector", "positions", "train"):
        if design.get(key) is not None:
            _flat_labels(key, design[key], values)
    draw = ReplayDraw(values, RandomDraw(0))
    got: dict[str, Label] = {}
    _flat_labels("", compiled.sample(draw).model_dump(mode="json"), got)
    asked: dict[str, Label] = {}
    _flat_labels("", {k: v for k, v in design.items() if v is not None}, asked)
    for path, value in asked.items():
        if path in got and got[path] != value:
            raise ValueError(f"sets {path} = {value} but the space gives {got[path]}")
    return draw.params
