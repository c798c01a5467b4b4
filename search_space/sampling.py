"""Sampling a space: one node tree, walked to sample (Optuna or seeded random), enumerate, count.

Order of decisions: the expert subset (one categorical over every valid subset, so samplers
model subsets directly), then each chosen expert's parameters, then the fusion kind among those
the subset size admits, then that kind's parameters, then the rest. Parameters of an unchosen
expert or fusion kind are never drawn.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from search_space.fusions import FUSIONS
from search_space.point import TrialConfig
from search_space.ranges import Choices, FloatRange, IntRange
from search_space.space import SearchSpace

Label = str | int | float | bool | None


class Draw(Protocol):
    """Where parameter values come from (an Optuna trial, a seeded RNG, ...)."""

    def categorical(self, name: str, labels: Sequence[Label]) -> Label: ...
    def integer(self, name: str, r: IntRange) -> int: ...
    def real(self, name: str, r: FloatRange) -> float: ...


class OptunaDraw:
    """Define-by-run: each decision is a `trial.suggest_*` call."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def categorical(self, name: str, labels: Sequence[Label]) -> Label:
        return self.trial.suggest_categorical(name, list(labels))

    def integer(self, name: str, r: IntRange) -> int:
        return self.trial.suggest_int(name, r.low, r.high, step=r.step or 1, log=r.log)

    def real(self, name: str, r: FloatRange) -> float:
        return self.trial.suggest_float(name, r.low, r.high, step=r.step, log=r.log)


class RandomDraw:
    """Uniform (or log-uniform) draws from a seeded numpy generator; records what it drew."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.params: dict[str, Label] = {}

    def categorical(self, name: str, labels: Sequence[Label]) -> Label:
        self.params[name] = labels[int(self.rng.integers(len(labels)))]
        return self.params[name]

    def integer(self, name: str, r: IntRange) -> int:
        if r.log:
            value = round(math.exp(self.rng.uniform(math.log(r.low), math.log(r.high))))
        else:
            value = int(self.rng.choice(r.values()))
        self.params[name] = min(max(value, r.low), r.high)
        return self.params[name]

    def real(self, name: str, r: FloatRange) -> float:
        grid = r.values()
        if grid is not None:
            value = float(self.rng.choice(grid))
        elif r.log:
            value = float(math.exp(self.rng.uniform(math.log(r.low), math.log(r.high))))
        else:
            value = float(self.rng.uniform(r.low, r.high))
        self.params[name] = value
        return value


# ---- nodes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixed:
    value: Any


@dataclass(frozen=True)
class Cat:
    name: str
    labels: tuple[Label, ...]
    options: tuple[Node, ...]


@dataclass(frozen=True)
class Num:
    name: str
    range: IntRange | FloatRange


@dataclass(frozen=True)
class Rec:
    fields: tuple[tuple[str, Node], ...]
    as_list: bool = False  # a list of records (e.g. train.stages): fields are its indices

    def build(self, items: dict[str, Any]) -> Any:
        return [items[key] for key, _ in self.fields] if self.as_list else items


Node = Fixed | Cat | Num | Rec


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple):
        return list(value)
    return value


def _label(value: Any) -> Label:
    plain = _plain(value)
    return plain if isinstance(plain, str | int | float | bool) or plain is None else json.dumps(plain)


def compile_value(value: Any, name: str) -> Node:
    """The node of one space value; `name` is its parameter name (a dotted path)."""
    if isinstance(value, Choices):
        if len(value.choices) == 1:
            return compile_value(value.choices[0], name)
        labels = tuple(_label(c) for c in value.choices)
        return Cat(name, labels, tuple(compile_value(c, name) for c in value.choices))
    if isinstance(value, IntRange | FloatRange):
        return Fixed(value.low) if value.low == value.high else Num(name, value)
    if isinstance(value, BaseModel):
        derived = getattr(getattr(type(value), "point_model", None), "derived", frozenset())
        return Rec(tuple((f, compile_value(getattr(value, f), f"{name}.{f}"))
                         for f in type(value).model_fields
                         if f not in derived or f in value.model_fields_set))
    ranges = Choices | IntRange | FloatRange
    if isinstance(value, dict) and any(isinstance(v, ranges) for v in value.values()):  # projector
        return Rec(tuple((str(k), compile_value(v, f"{name}.{k}")) for k, v in value.items()))
    if isinstance(value, list | tuple) and value and all(isinstance(v, BaseModel) for v in value):
        return Rec(tuple((str(i), compile_value(v, f"{name}.{i}")) for i, v in enumerate(value)),
                   as_list=True)
    return Fixed(_plain(value))


def sample(node: Node, draw: Draw) -> Any:
    if isinstance(node, Fixed):
        return node.value
    if isinstance(node, Cat):
        return sample(node.options[node.labels.index(draw.categorical(node.name, node.labels))], draw)
    if isinstance(node, Num):
        rng = node.range
        return draw.integer(node.name, rng) if isinstance(rng, IntRange) else draw.real(node.name, rng)
    return node.build({key: sample(child, draw) for key, child in node.fields})


def values(node: Node, continuous: str = "error") -> Iterator[Any]:
    """Every value of `node`. A continuous range raises, or with continuous="low" gives low;
    continuous="ends" gives only the two ends of every numeric range (for costs that grow or
    shrink with each number: their extremes lie there)."""
    if isinstance(node, Fixed):
        yield node.value
    elif isinstance(node, Cat):
        for option in node.options:
            yield from values(option, continuous)
    elif isinstance(node, Num) and continuous == "ends":
        yield from dict.fromkeys((node.range.low, node.range.high))
    elif isinstance(node, Num):
        grid = node.range.values()
        if grid is None:
            if continuous != "low":
                raise ValueError(f"'{node.name}' is continuous: the space is unbounded")
            grid = [node.range.low]
        yield from grid
    else:
        keys = [key for key, _ in node.fields]
        for combo in itertools.product(*(list(values(c, continuous)) for _, c in node.fields)):
            yield node.build(dict(zip(keys, combo, strict=True)))


def count(node: Node) -> int | None:
    """How many values `node` has; None when a continuous range makes it unbounded."""
    if isinstance(node, Fixed):
        return 1
    if isinstance(node, Cat):
        parts = [count(o) for o in node.options]
        return None if None in parts else sum(parts)  # type: ignore[arg-type]
    if isinstance(node, Num):
        grid = node.range.values()
        return None if grid is None else len(grid)
    parts = [count(c) for _, c in node.fields]
    return None if None in parts else math.prod(parts)  # type: ignore[arg-type]


def names(node: Node) -> list[str]:
    """Every parameter name that can be drawn below `node` (any branch)."""
    if isinstance(node, Cat):
        own = [node.name]
        return own + [n for o in node.options for n in names(o) if n not in own]
    if isinstance(node, Num):
        return [node.name]
    if isinstance(node, Rec):
        return [n for _, c in node.fields for n in names(c)]
    return []


def _continuous(node: Node) -> list[str]:
    if isinstance(node, Num):
        return [node.name] if node.range.values() is None else []
    if isinstance(node, Cat):
        return [n for o in node.options for n in _continuous(o)]
    if isinstance(node, Rec):
        return [n for _, c in node.fields for n in _continuous(c)]
    return []


# ---- the whole space ----------------------------------------------------------------------


def valid_subsets(space: SearchSpace) -> list[tuple[str, ...]]:
    """Subsets of the pool (in pool order) within the bounds, `require` and `forbid_together`."""
    pool, bounds = list(space.pool), space.subset
    high = min(bounds.max or len(pool), len(pool))
    out = []
    for size in range(bounds.min, high + 1):
        for combo in itertools.combinations(pool, size):
            chosen = set(combo)
            if not set(bounds.require) <= chosen:
                continue
            if any(set(group) <= chosen for group in bounds.forbid_together):
                continue
            out.append(combo)
    return out


def _only(node: Node, subset: tuple[str, ...]) -> Node:
    """A per-expert mapping (the `projector`) cut to the chosen experts: nothing is sampled for
    an expert left out, and the point names only its own experts."""
    if isinstance(node, Rec):
        return Rec(tuple((k, child) for k, child in node.fields if k in subset))
    if isinstance(node, Fixed) and isinstance(node.value, dict):
        return Fixed({k: v for k, v in node.value.items() if k in subset})
    if isinstance(node, Cat):
        return Cat(node.name, node.labels, tuple(_only(o, subset) for o in node.options))
    return node


@dataclass(frozen=True)
class FusionOption:
    label: str
    kind: str
    node: Node
    min_experts: int


@dataclass(frozen=True)
class CompiledSpace:
    """A space ready to sample; `sample(draw)` returns a validated `TrialConfig`."""

    space: SearchSpace
    subsets: tuple[tuple[str, ...], ...]
    experts: dict[str, Node]
    fusions: tuple[FusionOption, ...]
    rest: Rec

    def admissible(self, n_experts: int) -> list[FusionOption]:
        return [f for f in self.fusions if f.min_experts <= n_experts]

    def _fusion_node(self, n_experts: int) -> Node:
        options = self.admissible(n_experts)
        if len(options) == 1:
            return options[0].node
        name = "fusion" if len(options) == len(self.fusions) else (
            "fusion:" + "|".join(o.label for o in options))
        return Cat(name, tuple(o.label for o in options), tuple(o.node for o in options))

    def _subset_node(self) -> Node:
        if len(self.subsets) == 1:
            return Fixed(self.subsets[0])
        labels = tuple("+".join(s) for s in self.subsets)
        return Cat("experts", labels, tuple(Fixed(s) for s in self.subsets))

    def design_node(self, subset: tuple[str, ...]) -> Rec:
        """Everything below a chosen subset, as one record (experts, fusion, the rest)."""
        if not self.space.trains_vlm:  # evaluator and parameters: the whole design
            return self.rest
        experts = Rec(tuple((n, self.experts[n]) for n in subset))
        rest = tuple((key, _only(node, subset) if key == "projector" else node)
                     for key, node in self.rest.fields)
        return Rec((("experts", experts), ("fusion", self._fusion_node(len(subset))), *rest))

    def sample(self, draw: Draw) -> TrialConfig:
        subset = sample(self._subset_node(), draw)
        return self._point(sample(self.design_node(subset), draw))

    def _point(self, design: dict[str, Any]) -> TrialConfig:
        return TrialConfig.model_validate({"name": self.space.name, **design})

    def points(self) -> Iterator[TrialConfig]:
        """Every point of a finite space (raises ValueError for an unbounded one)."""
        for subset in self.subsets:
            for design in values(self.design_node(subset)):
                yield self._point(design)

    def extreme_points(self, subset: tuple[str, ...] | None = None) -> Iterator[TrialConfig]:
        """Every point (of one subset, or of all) with each numeric range at one of its ends
        (all choices enumerated)."""
        for chosen in self.subsets if subset is None else (subset,):
            for design in values(self.design_node(chosen), "ends"):
                yield self._point(design)

    def size(self) -> int | None:
        """Number of points; None when unbounded."""
        total = 0
        for subset in self.subsets:
            n = count(self.design_node(subset))
            if n is None:
                return None
            total += n
        return total

    def continuous_parameters(self) -> list[str]:
        """Float ranges without a `step` (what makes a space unbounded)."""
        nodes = [self.rest, *self.experts.values(), *(f.node for f in self.fusions)]
        return [n for node in nodes for n in _continuous(node)]

    def free_parameters(self) -> list[str]:
        """Every parameter name, in the order a design draws them (subset, experts, fusion, rest)."""
        if not self.space.trains_vlm:
            return names(self.rest)
        experts = {name: names(node) for name, node in self.experts.items()}
        fusion = {n: names(self._fusion_node(n)) for n in {len(s) for s in self.subsets}}
        rest = names(self.rest)
        out = dict.fromkeys(names(self._subset_node()))
        for subset in self.subsets:
            for part in (*(experts[n] for n in subset), fusion[len(subset)], rest):
                out.update(dict.fromkeys(part))
        return list(out)

    def only_point(self) -> TrialConfig:
        return next(self.points())


def compile_space(space: SearchSpace) -> CompiledSpace:
    if not space.trains_vlm:  # one empty "subset"; the design is the parameters
        parameters = Rec(tuple((name, compile_value(value, name))
                               for name, value in space.parameters.items()))
        rest = Rec((("evaluator", Fixed(space.evaluator)), ("parameters", parameters)))
        return CompiledSpace(space, ((),), {}, (), rest)
    experts = {name: compile_value(spec, f"experts.{name}") for name, spec in space.pool.items()}
    options = space.fusion_options()
    kinds = [o.kind for o in options]
    fusions = []
    for i, option in enumerate(options):
        label = option.kind if kinds.count(option.kind) == 1 else f"{option.kind}#{i}"
        prefix = f"fusion.{label}" if len(options) > 1 else "fusion"
        fusions.append(FusionOption(label, option.kind, compile_value(option, prefix),
                                    FUSIONS.get(option.kind).min_experts))
    subsets = tuple(s for s in valid_subsets(space) if any(len(s) >= f.min_experts for f in fusions))
    rest = Rec(tuple((key, compile_value(getattr(space, key), key))
                     for key in ("data", "language_model", "projector", "positions", "train")))
    return CompiledSpace(space, subsets, experts, tuple(fusions), rest)
