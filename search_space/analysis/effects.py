"""Linear models on one-hot design factors (statsmodels OLS): each factor's effect with the others
held fixed, pairwise interactions by the partial F test, and the predicted change of swapping
one factor. Columns that add no rank (aliased factors) are dropped and named, never guessed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from search_space.analysis.factors import COMPOSITE

SEP = "="  # a dummy column: `fusion=sequence_concat`


def reference(values: pd.Series) -> str:
    """The most frequent level (ties: the first in sorted order): what effects are relative to."""
    counts = values.value_counts()
    return str(min(counts.index, key=lambda v: (-counts[v], str(v))))


def dummies(factors: pd.DataFrame, names: Sequence[str], refs: Mapping[str, str]) -> pd.DataFrame:
    """`factor=level` 0/1 columns for every non-reference level, in factor order."""
    columns = {f"{name}{SEP}{lvl}": (factors[name] == lvl).astype(float)
               for name in names for lvl in sorted(factors[name].unique()) if lvl != refs[name]}
    return pd.DataFrame(columns, index=factors.index)


def interaction(factors: pd.DataFrame, a: str, b: str, refs: Mapping[str, str]) -> pd.DataFrame:
    """The products of `a`'s and `b`'s non-reference dummies: `a=x:b=y`."""
    da, db = dummies(factors, [a], refs), dummies(factors, [b], refs)
    columns = {f"{x}:{y}": da[x] * db[y] for x in da for y in db}
    return pd.DataFrame(columns, index=factors.index)


def independent(columns: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """The columns kept in order while each adds rank (after the intercept), and why each other
    one was dropped (a duplicate of a kept column, or a combination of others)."""
    kept: list[str] = []
    matrix = np.ones((len(columns), 1))  # (N, 1 + kept)
    dropped: dict[str, str] = {}
    for name in columns:
        trial = np.column_stack([matrix, columns[name].to_numpy()])
        if np.linalg.matrix_rank(trial) > matrix.shape[1]:
            kept.append(name)
            matrix = trial
            continue
        values = columns[name].to_numpy()
        twin = next((k for k in kept if np.array_equal(columns[k].to_numpy(), values)), None)
        dropped[name] = f"aliased with {twin}" if twin else "aliased (a combination of other factors)"
    return kept, dropped


@dataclass
class Fit:
    """An OLS fit of one target on the kept dummy columns."""

    columns: list[str]  # kept, without the intercept
    dropped: dict[str, str]
    refs: dict[str, str]
    params: pd.Series  # "const" then the columns
    conf: pd.DataFrame  # (columns + 1, 2), NaN without residual degrees of freedom
    pvalues: pd.Series
    ssr: float
    df_resid: float
    rank: int = field(default=0)


def fit(y: pd.Series, columns: pd.DataFrame, refs: Mapping[str, str]) -> Fit:
    """OLS of `y` on an intercept and the independent ones of `columns`."""
    import statsmodels.api as sm

    kept, dropped = independent(columns)
    design = sm.add_constant(columns[kept].to_numpy(dtype=float), has_constant="add")  # (N, 1 + K)
    model = sm.OLS(y.to_numpy(dtype=float), design).fit()
    names = ["const", *kept]
    with np.errstate(all="ignore"):
        conf = pd.DataFrame(np.asarray(model.conf_int(0.05)), index=names, columns=["low", "high"])
        pvalues = pd.Series(np.asarray(model.pvalues), index=names)
    if model.df_resid <= 0:
        conf[:] = np.nan
        pvalues[:] = np.nan
    return Fit(kept, dropped, dict(refs), pd.Series(np.asarray(model.params), index=names), conf, pvalues,
               float(model.ssr), float(model.df_resid), len(names))


def main_effects(y: pd.Series, factors: pd.DataFrame, names: Sequence[str]) -> Fit:
    refs = {name: reference(factors[name]) for name in names}
    return fit(y, dummies(factors, names, refs), refs)


def effect_rows(model: Fit, names: Sequence[str], factors: pd.DataFrame) -> list[dict[str, object]]:
    """One row per non-reference level of each factor in `names`: coef, 95% CI, p, note."""
    rows = []
    for name in names:
        for lvl in sorted(factors[name].unique()):
            if lvl == model.refs[name]:
                continue
            column = f"{name}{SEP}{lvl}"
            row: dict[str, object] = {"factor": name, "level": lvl, "reference": model.refs[name]}
            if column in model.dropped:
                row |= {"coef": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan,
                        "note": f"not estimable: {model.dropped[column]}"}
            else:
                row |= {"coef": model.params[column], "ci_low": model.conf.at[column, "low"],
                        "ci_high": model.conf.at[column, "high"], "p": model.pvalues[column],
                        "note": "" if model.df_resid > 0 else "no residual degrees of freedom: no CI"}
            rows.append(row)
    return rows


def interaction_test(y: pd.Series, factors: pd.DataFrame, names: Sequence[str], a: str,
                     b: str) -> dict[str, float] | None:
    """Partial F test of the `a` x `b` term over the main-effects model; None when the term adds
    no rank. `eta2`: partial eta squared, the share of the remaining variance the term explains."""
    from scipy import stats

    refs = {name: reference(factors[name]) for name in names}
    mains = dummies(factors, names, refs)
    restricted = fit(y, mains, refs)
    full = fit(y, pd.concat([mains, interaction(factors, a, b, refs)], axis=1), refs)
    df_term = full.rank - restricted.rank
    if df_term <= 0:
        return None
    gain = max(restricted.ssr - full.ssr, 0.0)
    eta2 = gain / restricted.ssr if restricted.ssr > 0 else np.nan
    if full.df_resid <= 0 or full.ssr <= 0:
        return {"df": df_term, "F": np.nan, "p": np.nan, "eta2": eta2}
    f_value = (gain / df_term) / (full.ssr / full.df_resid)
    p_value = float(stats.f.sf(f_value, df_term, full.df_resid))
    return {"df": df_term, "F": f_value, "p": p_value, "eta2": eta2}


def pairs(names: Sequence[str], limit: int = 66) -> list[tuple[str, str]]:
    """Every pair of factors when there are few; else only expert presence x fusion."""
    every = list(combinations(names, 2))
    if len(every) <= limit:
        return every
    return [(a, b) for a, b in every if _expert_fusion(a, b) or _expert_fusion(b, a)]


def _expert_fusion(a: str, b: str) -> bool:
    return a.startswith("expert:") and b == "fusion"


def predicted_change(model: Fit, factors: pd.DataFrame, names: Sequence[str], base: Mapping[str, str],
                     swapped: Mapping[str, str]) -> float:
    """The model's prediction for `swapped` minus that for `base` (levels of `names`); NaN when
    the difference is not estimable (its contrast is not in the row space of the full design)."""
    frame = pd.DataFrame([dict(base), dict(swapped)], dtype=object)
    full = dummies(pd.concat([factors[list(names)], frame], ignore_index=True), names, model.refs)
    rows = full.to_numpy(dtype=float)  # (N + 2, all dummies)
    observed = np.column_stack([np.ones(len(factors)), rows[:-2]])
    contrast = np.concatenate([[0.0], rows[-1] - rows[-2]])
    if np.linalg.matrix_rank(np.vstack([observed, contrast])) > np.linalg.matrix_rank(observed):
        return float("nan")
    x = full.iloc[-2:][model.columns].to_numpy(dtype=float)  # (2, K)
    values = model.params["const"] + x @ model.params[model.columns].to_numpy()
    return float(values[1] - values[0])


def model_names(names: Sequence[str], name: str) -> list[str]:
    """The factors of the model that estimates `name`'s effect: the primitive factors (any other
    name), or for a composite factor (subset, subset size) itself and all but expert presence."""
    primitive = [n for n in names if n not in COMPOSITE]
    if name not in COMPOSITE:
        return primitive
    return [name, *(n for n in primitive if not n.startswith("expert:"))]
