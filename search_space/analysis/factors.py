"""Design factors of stored designs: what a factor report compares (one level per design).

A design is its canonical config (`TrialConfig.canonical()`, as the store keeps it). Each factor
is a string level: `expert:<name>` present/absent, `subset` (primary first), `subset size`,
`fusion`, `projector`, `positions`, `<expert>.layers` / `<expert>.tokens` ("absent" when the
expert is not in the design), `lr` in log-spaced bins; a non-VLM evaluator's `parameters` are
factors by their own names. Pure code: pandas and numpy only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

ABSENT = "absent"
PRESENT = "present"
COMPOSITE = ("subset", "subset size")  # functions of the expert-presence factors
Levels = dict[str, str]


def level(value: Any) -> str:
    """A config value as a factor level: `-1`, `[-1, -2]`, `linear`, `{clip: linear, ...}`."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {level(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, separators=(", ", ": ")) if isinstance(value, list) else str(value)


def _experts(config: Mapping[str, Any], pool: Sequence[str]) -> Levels:
    chosen = config.get("experts") or {}
    return {f"expert:{name}": PRESENT if name in chosen else ABSENT for name in pool}


def _subset(config: Mapping[str, Any], pool: Sequence[str]) -> Levels:
    chosen = list(config.get("experts") or {})
    return {"subset": "+".join(chosen), "subset size": str(len(chosen))} if chosen else {}


def _per_expert(config: Mapping[str, Any], pool: Sequence[str]) -> Levels:
    chosen = config.get("experts") or {}
    return {f"{name}.{key}": level(chosen[name].get(key)) if name in chosen else ABSENT
            for name in pool for key in ("layers", "tokens")}


def _design(config: Mapping[str, Any], pool: Sequence[str]) -> Levels:
    found: Levels = {}
    if "fusion" in config:
        found["fusion"] = level((config["fusion"] or {}).get("kind"))
    for key in ("projector", "positions"):
        if key in config:
            found[key] = level(config[key])
    return found


def _parameters(config: Mapping[str, Any], pool: Sequence[str]) -> Levels:
    return {str(k): level(v) for k, v in (config.get("parameters") or {}).items()}


EXTRACTORS: tuple[Callable[[Mapping[str, Any], Sequence[str]], Levels], ...] = (
    _experts, _subset, _design, _per_expert, _parameters)


def lr_bins(values: Iterable[float | None], bins: int = 3) -> list[str]:
    """Each learning rate's log-spaced bin between the smallest and largest, labelled with its
    range (`1.0e-04..3.2e-04`); one bin when every rate is the same."""
    rates = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    finite = rates[np.isfinite(rates) & (rates > 0)]
    if finite.size == 0:
        return [ABSENT] * len(rates)
    low, high = float(finite.min()), float(finite.max())
    if math.isclose(low, high):
        return [f"{low:.1e}"] * len(rates)
    edges = np.logspace(math.log10(low), math.log10(high), bins + 1)
    labels = [f"{edges[i]:.1e}..{edges[i + 1]:.1e}" for i in range(bins)]
    index = np.clip(np.searchsorted(edges, rates, side="right") - 1, 0, bins - 1)
    return [labels[i] if np.isfinite(r) else ABSENT for i, r in zip(index, rates, strict=True)]


def design_factors(configs: Sequence[Mapping[str, Any]], *, pool: Sequence[str] | None = None,
                   bins: int = 3) -> pd.DataFrame:
    """One row per design, one string column per factor (every factor, varying or not); `pool`:
    the candidate experts (default: every expert some design uses, in first-seen order)."""
    if pool is None:
        pool = list(dict.fromkeys(name for c in configs for name in (c.get("experts") or {})))
    rows = [{k: v for extract in EXTRACTORS for k, v in extract(c, pool).items()} for c in configs]
    table = pd.DataFrame(rows, index=range(len(configs)), dtype=object).fillna(ABSENT)
    lrs = [(c.get("train") or {}).get("lr") for c in configs]
    if any(v is not None for v in lrs):
        table["lr"] = lr_bins(lrs, bins)
    return table


def varying(factors: pd.DataFrame) -> list[str]:
    """The factors observed at two levels or more (the only ones a report can compare); an
    expert's layers or tokens only when two of its own levels are seen (absent/one value says no
    more than the expert's presence)."""
    return [name for name in factors.columns
            if factors[name][factors[name] != ABSENT].nunique() >= 2
            or (not nested(name) and factors[name].nunique() >= 2)]


def family(name: str) -> str | None:
    """The expert a factor belongs to (`expert:clip`, `clip.tokens` -> `clip`), else None."""
    if name.startswith("expert:"):
        return name.removeprefix("expert:")
    head, dot, tail = name.rpartition(".")
    return head if dot and tail in ("layers", "tokens") else None


def nested(name: str) -> bool:
    """A per-expert factor (`clip.tokens`): defined only while its expert is present."""
    return family(name) is not None and not name.startswith("expert:")
