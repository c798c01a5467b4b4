"""Proxy fidelity: how far a short-budget search's answer holds at a larger budget.

Pure functions on plain sequences (scipy is imported when a function runs): the mean and t
interval of a metric over seeds, Kendall's tau and Spearman's rho between two rankings, top-k
agreement, and which pairs of designs lie within seed noise (Welch's t-test).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

NOISE_ALPHA = 0.05  # a difference Welch's t-test cannot tell from noise at this level is "noise"


@dataclass(frozen=True)
class MeanCI:
    """A mean over `n` seeds and the half-width of its t interval (NaN when n < 2)."""

    mean: float
    half_width: float
    n: int
    confidence: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI:
    """Mean ± t_{(1+c)/2, n-1} · s / sqrt(n) (s: the sample standard deviation); NaN values are
    left out; no values: NaN mean."""
    from scipy import stats

    kept = [float(v) for v in values if not math.isnan(float(v))]
    n = len(kept)
    if n == 0:
        return MeanCI(math.nan, math.nan, 0, confidence)
    mean = sum(kept) / n
    if n < 2:
        return MeanCI(mean, math.nan, 1, confidence)
    sd = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1))
    return MeanCI(mean, float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n), n, confidence)


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[list[float], list[float]]:
    if len(a) != len(b):
        raise ValueError(f"two rankings of different lengths ({len(a)} and {len(b)})")
    pairs = [(float(x), float(y)) for x, y in zip(a, b, strict=True)
             if not (math.isnan(float(x)) or math.isnan(float(y)))]
    return [x for x, _ in pairs], [y for _, y in pairs]


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (scipy.stats.kendalltau) between two scores of the same designs; pairs
    with a NaN are left out; NaN with fewer than two designs or a constant score."""
    from scipy import stats

    x, y = _paired(a, b)
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(stats.kendalltau(x, y).statistic)


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho (scipy.stats.spearmanr), under the same rules as `kendall_tau`."""
    from scipy import stats

    x, y = _paired(a, b)
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def top_k_agreement(a: Sequence[float], b: Sequence[float], k: int, maximize: bool = True) -> float:
    """|top-k by `a` ∩ top-k by `b`| / k over the designs both score (ties: the earlier design
    first); k is capped at that count; NaN when there is none."""
    x, y = _paired(a, b)
    k = min(k, len(x))
    if k <= 0:
        return math.nan
    sign = -1.0 if maximize else 1.0

    def top(values: list[float]) -> set[int]:
        return set(sorted(range(len(values)), key=lambda i: (sign * values[i], i))[:k])

    return len(top(x) & top(y)) / k


@dataclass(frozen=True)
class NoisePair:
    """Two designs and Welch's t-test of their per-seed values (p NaN: fewer than 2 seeds)."""

    a: str
    b: str
    difference: float  # mean(a) - mean(b)
    p_value: float
    within_noise: bool | None  # None: not enough seeds to tell


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of Welch's t-test; for two sets without spread, 1 when equal, else 0."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return math.nan
    if len(set(a)) == 1 and len(set(b)) == 1:
        return 1.0 if a[0] == b[0] else 0.0
    with warnings.catch_warnings():  # scipy warns of precision loss when one side has no spread
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def within_noise(samples: Mapping[str, Sequence[float]], alpha: float = NOISE_ALPHA) -> list[NoisePair]:
    """Every pair of designs (in the mapping's order) with its Welch t-test: `within_noise` when
    p >= alpha (the test cannot tell them apart), None with fewer than 2 seeds on either side.
    NaN values (failed seeds) are left out."""
    clean = {name: [float(v) for v in values if not math.isnan(float(v))] for name, values in samples.items()}
    pairs = []
    for (a, xs), (b, ys) in combinations(clean.items(), 2):
        p = welch_p(xs, ys)
        difference = (sum(xs) / len(xs) - sum(ys) / len(ys)) if xs and ys else math.nan
        pairs.append(NoisePair(a, b, difference, p, None if math.isnan(p) else p >= alpha))
    return pairs
