"""The factor report of a study: which design factors matter, per objective.

Pure functions on tables: `trials` (one row per complete search trial: `number`, `config_hash`
and a column per metric) beside `factors` (the same rows: `design_factors`). For each target
metric: marginal means with bootstrap CIs, effects with the other factors held fixed (OLS on
one-hot factors), PED-ANOVA and fANOVA importances (Optuna), pairwise interactions (partial F),
and a paper-style ablation table around the best design.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from search_space.analysis import effects
from search_space.analysis.ablation import ablation_table
from search_space.analysis.factors import COMPOSITE, varying

MIN_TRIALS = 5
Target = tuple[str, str]  # (metric, "maximize" | "minimize")


class TooFewTrials(ValueError):
    """Fewer complete trials than a report needs, or no factor at two levels."""

    def __init__(self, found: int, needed: int, reason: str = "") -> None:
        self.found, self.needed = found, needed
        super().__init__(reason or f"{found} complete search trial(s); a factor report needs at least "
                                   f"{needed}")


@dataclass
class FactorReport:
    """Every table of the report (pandas DataFrames) and the notes that qualify them."""

    design: pd.DataFrame  # one row per trial: number, config_hash, the analysed factors, the targets
    factors: list[str]
    targets: list[Target]
    marginal: pd.DataFrame  # metric, factor, level, n, mean, ci_low, ci_high
    effects: pd.DataFrame  # metric, factor, level, reference, coef, ci_low, ci_high, p, note
    importance: pd.DataFrame  # metric, factor, ped_anova, fanova
    interactions: pd.DataFrame  # metric, factor_a, factor_b, kind, df, F, p, eta2
    best: pd.DataFrame  # the best design by the first target: number, config_hash, levels, values
    ablation: pd.DataFrame  # factor, from, to, metric, best, value, change, source, trials, within_noise
    notes: list[str] = field(default_factory=list)
    # expert_a, expert_b, cka, near_duplicate: linear CKA of the pool's features (empty: not computed)
    similarity: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["expert_a", "expert_b", "cka", "near_duplicate"]))

    TABLES = ("design", "marginal", "effects", "importance", "interactions", "best", "ablation", "similarity")

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in self.TABLES}

    def to_json(self) -> dict[str, Any]:
        """Every table as records (NaN as null), the targets and the notes."""
        out: dict[str, Any] = {name: _records(table) for name, table in self.tables().items()}
        wanted = [{"metric": m, "direction": d} for m, d in self.targets]
        return out | {"factors": self.factors, "targets": wanted, "notes": self.notes}


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    clean = table.astype(object).where(pd.notna(table), None)
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in clean.to_dict("records")]


def factor_report(trials: pd.DataFrame, factors: pd.DataFrame, targets: Sequence[Target], *,
                  validation: pd.DataFrame | None = None, seed: int = 0, resamples: int = 2000,
                  min_trials: int = MIN_TRIALS) -> FactorReport:
    """The report over `trials` (complete, non-reused search trials) and their `factors`;
    `validation`: optional validation trials (design_hash, seed, metric columns)."""
    if len(trials) < min_trials:
        raise TooFewTrials(len(trials), min_trials)
    names = varying(factors)
    if not names:
        raise TooFewTrials(len(trials), min_trials, f"no design factor takes two levels in the {len(trials)} "
                                                    "complete trials: nothing to compare")
    targets = [(m, d) for m, d in targets if m in trials and trials[m].notna().sum() >= min_trials]
    design = pd.concat([trials[["number", "config_hash"]].reset_index(drop=True),
                        factors[names].reset_index(drop=True),
                        trials[[m for m, _ in targets]].reset_index(drop=True).astype(float)], axis=1)
    notes: list[str] = []
    primitive = [n for n in names if n not in COMPOSITE]
    rng = np.random.default_rng(seed)
    marginal = pd.DataFrame([r for m, _ in targets for r in marginal_means(design, names, m, rng, resamples)])
    fits: dict[tuple[str, str], effects.Fit] = {}
    effect_table = pd.DataFrame([r for m, _ in targets for r in adjusted(design, names, m, fits, notes)])
    importance = pd.DataFrame([r for m, d in targets
                               for r in importances(design, primitive, m, d, seed, notes)])
    pairs = effects.pairs(primitive)
    interactions = pd.DataFrame([r for m, _ in targets
                                 for r in interaction_rows(design, primitive, m, pairs)])
    if not interactions.empty:
        interactions = interactions.sort_values(["metric", "p", "eta2"], ascending=[True, True, False],
                                                na_position="last", kind="stable").reset_index(drop=True)
    best, ablation = ablation_table(design, names, targets, fits, validation, notes)
    if COMPOSITE[0] in names:
        notes.append("subset and subset size are functions of the expert-presence factors: their adjusted "
                     "effects come from a model without expert presence; importances use expert presence")
    return FactorReport(design, names, list(targets), marginal, effect_table, importance, interactions, best,
                        ablation, list(dict.fromkeys(notes)))


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, resamples: int) -> tuple[float, float]:
    """The 95% percentile-bootstrap CI of the mean (NaN for fewer than two values)."""
    if len(values) < 2:
        return float("nan"), float("nan")
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)  # (R,)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def marginal_means(design: pd.DataFrame, names: Sequence[str], metric: str, rng: np.random.Generator,
                   resamples: int) -> list[dict[str, Any]]:
    data = design[design[metric].notna()]
    rows = []
    for name in names:
        for lvl, group in data.groupby(name, sort=True):
            values = group[metric].to_numpy(dtype=float)
            low, high = bootstrap_ci(values, rng, resamples)
            rows.append({"metric": metric, "factor": name, "level": lvl, "n": len(values),
                         "mean": float(values.mean()), "ci_low": low, "ci_high": high})
    return rows


def adjusted(design: pd.DataFrame, names: Sequence[str], metric: str,
             fits: dict[tuple[str, str], effects.Fit], notes: list[str]) -> list[dict[str, Any]]:
    """Effects with the other factors held fixed; `fits` keeps each model by (metric, name)."""
    data = design[design[metric].notna()]
    rows: list[dict[str, Any]] = []
    for key in ["", *(n for n in names if n in COMPOSITE)]:  # "": the model of the primitive factors
        these = effects.model_names(names, key)
        model = effects.main_effects(data[metric], data, these)
        fits[(metric, key)] = model
        shown = [key] if key else these
        rows += [{"metric": metric, **r} for r in effects.effect_rows(model, shown, data)]
        if model.dropped:
            notes.append(f"{metric}{f' ({key} model)' if key else ''}: the design is rank deficient "
                         f"({len(model.dropped)} of "
                         f"{len(model.dropped) + len(model.columns)} one-hot columns aliased); those "
                         "levels are marked not estimable")
        if model.df_resid <= 0:
            notes.append(f"{metric}: as many parameters as trials: adjusted effects have no CI")
    return rows


def importances(design: pd.DataFrame, names: Sequence[str], metric: str, direction: str, seed: int,
                notes: list[str]) -> list[dict[str, Any]]:
    """PED-ANOVA and fANOVA importances (normalized) from an in-memory Optuna study."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    data = design[design[metric].notna()]
    distributions = {n: CategoricalDistribution(sorted(data[n].unique())) for n in names}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory"
    try:
        study = optuna.create_study(direction=direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials([optuna.trial.create_trial(params={n: row[n] for n in names},
                                                distributions=distributions, value=float(row[metric]))
                      for _, row in data.iterrows()])
    found: dict[str, dict[str, float]] = {}
    evaluators = {"ped_anova": PedAnovaImportanceEvaluator(), "fanova": FanovaImportanceEvaluator(seed=seed)}
    for label, evaluator in evaluators.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                found[label] = optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                                       params=list(names))
            except (RuntimeError, ValueError) as exc:
                notes.append(f"{metric}: {label} importances failed ({exc})")
                found[label] = {}
    if len(data) * 0.1 < 5:
        notes.append("PED-ANOVA compares the top 10% of trials: with fewer than 50 trials that is under 5 "
                     "trials, so its importances are unstable")
    rows = [{"metric": metric, "factor": n, "ped_anova": found["ped_anova"].get(n, np.nan),
             "fanova": found["fanova"].get(n, np.nan)} for n in names]
    return sorted(rows, key=lambda r: -np.nan_to_num(r["fanova"], nan=-1.0))


def interaction_rows(design: pd.DataFrame, names: Sequence[str], metric: str,
                     pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    data = design[design[metric].notna()]
    rows = []
    for a, b in pairs:
        test = effects.interaction_test(data[metric], data, names, a, b)
        if test is not None:
            kind = "expert x fusion" if "fusion" in (a, b) and (a + b).count("expert:") else "other"
            rows.append({"metric": metric, "factor_a": a, "factor_b": b, "kind": kind, **test})
    return rows
