"""The paper-style ablation table: the best design, and the change from swapping one factor at a
time, from measured trials that differ only in that factor where they exist, else the main
effects model's prediction (marked `predicted`); "within noise" from validation seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from search_space.analysis import effects
from search_space.analysis.factors import ABSENT, COMPOSITE, PRESENT, family, nested
from search_space.analysis.fidelity import mean_ci

Target = tuple[str, str]


def best_index(design: pd.DataFrame, target: Target) -> int:
    """The row of the best design by `target` (ties: the lowest trial number)."""
    metric, direction = target
    data = design[design[metric].notna()]
    ordered = data.sort_values([metric, "number"], ascending=[direction == "minimize", True], kind="stable")
    return int(ordered.index[0])


def differs_only_in(best: pd.Series, row: pd.Series, name: str, compared: Sequence[str]) -> bool:
    """`row` is `best` with only `name` changed (and, for an expert's presence or the subset, the
    factors of the experts that came or went)."""
    if row[name] == best[name]:
        return False
    moved = {family(g) for g in compared if g.startswith("expert:") and row[g] != best[g]}
    own = family(name) if name.startswith("expert:") else None
    if (own is not None and moved != {own}) or (own is None and name not in COMPOSITE and moved):
        return False
    return all(row[g] == best[g] or g == name or family(g) in moved for g in compared)


def swapped_levels(design: pd.DataFrame, best: Mapping[str, str], names: Sequence[str], name: str,
                   lvl: str) -> dict[str, str]:
    """`best`'s levels with `name` set to `lvl`; an expert that goes has its factors absent, one
    that comes gets its most frequent levels."""
    out = {n: best[n] for n in names} | {name: lvl}
    if name.startswith("expert:"):
        present = {family(name)} if lvl == PRESENT else set()
        gone = set() if lvl == PRESENT else {family(name)}
    elif name == "subset":
        experts = set(lvl.split("+"))
        present = experts
        gone = {family(n) for n in names if nested(n)} - experts
    else:
        return out
    for n in names:
        if nested(n) and family(n) in gone:
            out[n] = ABSENT
        elif nested(n) and family(n) in present and out[n] == ABSENT:
            seen = design[n][design[n] != ABSENT]
            out[n] = effects.reference(seen) if len(seen) else ABSENT
    return out


NOISE_FLOOR = 1e-9  # a change this small is no change (an OLS prediction's rounding, e.g. 1.5e-14)


def halfwidths(validation: pd.DataFrame | None, best_hash: str, metrics: Sequence[str],
               notes: list[str]) -> dict[str, float]:
    """Per metric, the 95% CI half-width over validation seeds: the best design's when it was
    validated with two seeds or more, else the mean over the designs that were."""
    if validation is None or validation.empty:
        return {}
    found: dict[str, float] = {}
    for metric in (m for m in metrics if m in validation):
        groups = validation[validation[metric].notna()].groupby("design_hash")[metric]
        width = {h: mean_ci(list(v)).half_width for h, v in groups if len(v) >= 2}
        if best_hash in width:
            found[metric] = width[best_hash]
        elif width:
            found[metric] = float(np.mean(list(width.values())))
            notes.append(f"{metric}: the best design has no validation seeds; 'within noise' uses the mean "
                         f"95% CI half-width of {len(width)} validated design(s)")
    return found


def ablation_table(design: pd.DataFrame, names: Sequence[str], targets: Sequence[Target],
                   fits: Mapping[tuple[str, str], effects.Fit], validation: pd.DataFrame | None,
                   notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the best design as one row, the ablation rows: one per factor, other level and metric)."""
    if not targets:
        return pd.DataFrame(), pd.DataFrame()
    at = best_index(design, targets[0])
    best = design.loc[at]
    noise = halfwidths(validation, str(best["config_hash"]), [m for m, _ in targets], notes)
    compared = [n for n in names if n not in COMPOSITE]
    rows: list[dict[str, Any]] = []
    for name in names:
        if nested(name) and best[name] == ABSENT:
            continue
        for lvl in sorted(design[name].unique()):
            if lvl == best[name] or (nested(name) and lvl == ABSENT):
                continue
            match = design[[differs_only_in(best, r, name, compared) and r[name] == lvl
                            for _, r in design.iterrows()]]
            rows += [_change(design, best, match, name, lvl, t, fits, noise) for t in targets]
    return design.loc[[at]].reset_index(drop=True), pd.DataFrame(rows)


def _change(design: pd.DataFrame, best: pd.Series, match: pd.DataFrame, name: str, lvl: str,
            target: Target, fits: Mapping[tuple[str, str], effects.Fit], noise: Mapping[str, float]
            ) -> dict[str, Any]:
    metric = target[0]
    measured = match[match[metric].notna()]
    if len(measured):
        change, source = float(measured[metric].mean()) - float(best[metric]), "measured"
    else:
        model = fits[(metric, name if name in COMPOSITE else "")]
        these = list(model.refs)  # the model's factors, in order
        swapped = swapped_levels(design, best, these, name, lvl)
        change = effects.predicted_change(model, design[design[metric].notna()], these,
                                          {n: best[n] for n in these}, swapped)
        source = "predicted" if np.isfinite(change) else "not estimable"
    width = noise.get(metric)
    return {"factor": name, "from": best[name], "to": lvl, "metric": metric, "best": float(best[metric]),
            "value": float(best[metric]) + change if np.isfinite(change) else np.nan, "change": change,
            "source": source, "trials": ", ".join(str(int(n)) for n in measured["number"]),
            "within_noise": None if width is None or not np.isfinite(change)
            else bool(abs(change) <= width + NOISE_FLOOR)}
