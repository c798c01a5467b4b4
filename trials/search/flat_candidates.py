"""FlatBO's side of a flat space: its parameters encoded for a GP, and the candidate pool.

Encoding: a categorical parameter one-hot, a numeric one scaled to [0, 1] (on a log scale where
its distribution is log). Candidates: uniform draws from every distribution, plus each front
design with one parameter changed (every other choice of a categorical; one and two steps
either way, and one uniform draw, of a numeric one), minus every design already drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

Params = dict[str, Any]


class Encoder:
    """A fixed order of the space's parameters, and their GP encoding."""

    def __init__(self, space: Mapping[str, BaseDistribution]) -> None:
        self.names = sorted(space)
        self.space = dict(space)

    def key(self, params: Mapping[str, Any]) -> tuple:
        return tuple(params[n] for n in self.names)

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """(n, d): one-hot blocks and [0, 1] columns, in `names` order."""
        columns = [self._column(n, [r[n] for r in rows]) for n in self.names]
        return np.concatenate(columns, axis=1) if columns else np.zeros((len(rows), 0))

    def _column(self, name: str, values: list[Any]) -> np.ndarray:
        d = self.space[name]
        if isinstance(d, CategoricalDistribution):
            out = np.zeros((len(values), len(d.choices)))
            out[np.arange(len(values)), [d.choices.index(v) for v in values]] = 1.0
            return out
        f = math.log if d.log else float
        low, high = f(d.low), f(d.high)
        scaled = [(f(v) - low) / (high - low) if high > low else 0.0 for v in values]
        return np.array(scaled, dtype=float).reshape(-1, 1)


def _uniform(d: BaseDistribution, rng: np.random.Generator, n: int | None = None) -> Any:
    """One uniform draw of the distribution, or a list of `n` (drawn at once)."""
    size = 1 if n is None else n
    if isinstance(d, CategoricalDistribution):
        values = [d.choices[i] for i in rng.integers(len(d.choices), size=size)]
    else:
        low, high = (math.log(d.low), math.log(d.high)) if d.log else (d.low, d.high)
        drawn = rng.uniform(low, high, size=size)
        values = [_snap(d, v) for v in (np.exp(drawn) if d.log else drawn).tolist()]
    return values[0] if n is None else values


def _snap(d: BaseDistribution, value: float) -> Any:
    """A value of the distribution: on its step grid, within its bounds."""
    step = d.step
    if step is not None:
        value = d.low + round((value - d.low) / step) * step
    value = min(max(value, d.low), d.high)
    return float(value) if isinstance(d, FloatDistribution) else round(value)


def _changes(d: BaseDistribution, value: Any, rng: np.random.Generator) -> list[Any]:
    """The values one parameter of a front design moves to."""
    if isinstance(d, CategoricalDistribution):
        return [c for c in d.choices if c != value]
    step = d.step or (d.high - d.low) / 20.0
    moves = [value + k * step for k in (-2, -1, 1, 2)] + [_uniform(d, rng)]
    return [v for v in {_snap(d, m) for m in moves} if v != value]


def candidates(encoder: Encoder, front: Sequence[Params], drawn: set[tuple], n: int,
               rng: np.random.Generator) -> list[Params]:
    """Untried designs: each front design with one parameter changed, then `n` uniform draws."""
    pool: dict[tuple, Params] = {}

    def add(params: Params) -> None:
        key = encoder.key(params)
        if key not in drawn and key not in pool:
            pool[key] = params

    for design in front:
        for name in encoder.names:
            for value in _changes(encoder.space[name], design[name], rng):
                add({**{k: design[k] for k in encoder.names}, name: value})
    columns = [_uniform(encoder.space[name], rng, n) for name in encoder.names]
    for row in zip(*columns, strict=True):
        add(dict(zip(encoder.names, row, strict=True)))
    return list(pool.values())
