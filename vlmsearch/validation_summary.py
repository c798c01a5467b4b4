"""What a validation found, from the stored validation trials: per design the mean ± 95% CI of
every objective over seeds, and for the study Kendall's tau and Spearman's rho between the search
ranking (the search-budget value of the first objective) and the validation ranking (its mean over
seeds), top-k agreement, and which pairs of front designs lie within seed noise.

Noise rule: a pair of front designs is within noise when Welch's t-test on their per-seed values
of the first objective cannot tell them apart (p >= 0.05); with fewer than two seeds on either
side it is not judged (None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from search_space import TrialConfig
from search_space.analysis import NOISE_ALPHA, MeanCI, NoisePair, mean_ci, within_noise

NOISE_RULE = (f"Welch's t-test on the per-seed values of the first objective: p >= {NOISE_ALPHA} "
              "is within noise (not judged with fewer than 2 seeds)")


@dataclass(frozen=True)
class Design:
    """A search design chosen for validation (on the front, or among the top K)."""

    number: int  # its search trial
    config_hash: str
    point: TrialConfig
    search: dict[str, float]  # its final metrics at the search budget
    front: bool
    steps: int  # the validation budget

    @property
    def label(self) -> str:
        subset = "+".join(self.point.experts) if self.point.experts else self.point.evaluator
        return f"{subset} | {self.point.fusion.kind} | {self.config_hash[:6]}"


@dataclass
class DesignResult:
    design: Design
    seeds: list[int]  # the seeds that completed
    values: dict[str, list[float]]  # objective -> per-seed values (in seed order)
    ci: dict[str, MeanCI]
    rank_search: int | None = None  # 1 = best, among the validated designs
    rank_validation: int | None = None


@dataclass
class Validation:
    study: str
    objectives: list[Any]  # the study's Objective models
    designs: list[DesignResult]
    seeds: int
    top: int
    kendall_tau: float
    spearman_rho: float
    top_k_agreement: float
    k: int
    noise: list[NoisePair]
    near_best: list[NoisePair] = field(default_factory=list)  # (the validation's best, each other design)
    failed: int = 0  # validation trials of these designs that did not complete
    trained: int = 0  # trained by this run (the rest were complete already)
    messages: list[str] = field(default_factory=list)

    @property
    def first(self) -> Any:
        return self.objectives[0]

    @property
    def steps(self) -> int:
        return max((d.design.steps for d in self.designs), default=0)

    def metrics(self) -> dict[str, float]:
        """The parent run's `validation/<name>` metrics."""
        return {"kendall_tau": self.kendall_tau, "spearman_rho": self.spearman_rho,
                "top_k_agreement": self.top_k_agreement, "steps": float(self.steps),
                "seeds": float(self.seeds)}

    def to_json(self) -> dict[str, Any]:
        return {"study": self.study, "objective": self.first.metric, "direction": self.first.direction,
                "steps": self.steps, "seeds": self.seeds, "top": self.top,
                "designs": [_design_json(d) for d in self.designs],
                "kendall_tau": _num(self.kendall_tau), "spearman_rho": _num(self.spearman_rho),
                "top_k_agreement": _num(self.top_k_agreement), "k": self.k,
                "within_noise": [_pair_json(p, self.designs) for p in self.noise],
                "within_noise_of_best": [_pair_json(p, self.designs) for p in self.near_best],
                "noise_rule": NOISE_RULE,
                "failed": self.failed, "trained": self.trained}


def summarize(study: str, objectives: Sequence[Any], designs: Sequence[Design], rows: Sequence[Any],
              seeds: int, top: int) -> Validation:
    """`rows`: the study's stored validation trials (`storage.ValidationRow`); those of these
    designs at their budget and first `seeds` seeds count."""
    from search_space.analysis import kendall_tau, spearman_rho, top_k_agreement

    results = [_design_result(d, rows, objectives, seeds) for d in designs]
    first = objectives[0]
    sign = -1.0 if first.direction == "maximize" else 1.0
    searched = [d.design.search.get(first.metric, math.nan) for d in results]
    validated = [d.ci[first.metric].mean for d in results]
    _rank(results, searched, sign, "rank_search", validated)
    _rank(results, validated, sign, "rank_validation", validated)
    k = max(1, min(top if top > 0 else len(results), len(results) // 2))  # of all designs: no test
    front = {d.design.label: d.values[first.metric] for d in results if d.design.front}
    wanted = len(designs) * seeds
    done = sum(len(d.seeds) for d in results)
    return Validation(study, list(objectives), results, seeds, top, kendall_tau(searched, validated),
                      spearman_rho(searched, validated),
                      top_k_agreement(searched, validated, k, first.direction == "maximize"), k,
                      within_noise(front), near_best(results, first.metric), failed=wanted - done)


def near_best(results: Sequence[DesignResult], metric: str) -> list[NoisePair]:
    """Each design against the validation's best (rank 1), by the same Welch rule as the front's
    pairs: which designs the seeds cannot tell from the best."""
    best = next((d for d in results if d.rank_validation == 1), None)
    if best is None:
        return []
    return [within_noise({best.design.label: best.values[metric], d.design.label: d.values[metric]})[0]
            for d in results if d is not best]


def _design_result(design: Design, rows: Sequence[Any], objectives: Sequence[Any],
                   seeds: int) -> DesignResult:
    wanted = range(design.point.train.seed, design.point.train.seed + seeds)
    mine = sorted((r for r in rows if r.design_hash == design.config_hash and r.steps == design.steps
                   and r.seed in wanted and r.status == "complete"), key=lambda r: r.seed)
    values = {o.metric: [float(r.metrics.get(o.metric, math.nan)) for r in mine] for o in objectives}
    return DesignResult(design, [r.seed for r in mine], values, {m: mean_ci(v) for m, v in values.items()})


def _rank(results: list[DesignResult], scores: list[float], sign: float, attribute: str,
          validated: list[float]) -> None:
    """1 = best among the designs with a validation mean (the others get None)."""
    usable = [i for i, v in enumerate(validated) if not math.isnan(v) and not math.isnan(scores[i])]
    for place, i in enumerate(sorted(usable, key=lambda i: (sign * scores[i], i)), start=1):
        setattr(results[i], attribute, place)


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _design_json(d: DesignResult) -> dict[str, Any]:
    design = d.design
    return {"number": design.number, "config_hash": design.config_hash, "design": design.label,
            "subset": list(design.point.experts), "fusion": design.point.fusion.kind, "front": design.front,
            "steps": design.steps, "seeds": d.seeds, "n": len(d.seeds),
            "search": {m: _num(v) for m, v in design.search.items() if m in d.values},
            "validation": {m: {"mean": _num(ci.mean), "ci95": _num(ci.half_width), "low": _num(ci.low),
                               "high": _num(ci.high), "values": [_num(v) for v in d.values[m]]}
                           for m, ci in d.ci.items()},
            "rank_search": d.rank_search, "rank_validation": d.rank_validation}


def _pair_json(pair: NoisePair, designs: Sequence[DesignResult]) -> dict[str, Any]:
    numbers = {d.design.label: d.design.number for d in designs}
    return {"a": numbers[pair.a], "b": numbers[pair.b], "design_a": pair.a, "design_b": pair.b,
            "difference": _num(pair.difference), "p_value": _num(pair.p_value),
            "within_noise": pair.within_noise}


def frame(validation: Validation) -> Any:
    """One row per design (pandas DataFrame); the summary in `df.attrs`."""
    import pandas as pd

    rows = []
    for d in validation.designs:
        point = d.design.point
        row: dict[str, Any] = {"number": d.design.number, "config_hash": d.design.config_hash,
                               "subset": "+".join(point.experts), "fusion": point.fusion.kind,
                               "front": d.design.front, "steps": d.design.steps, "n_seeds": len(d.seeds)}
        for metric, ci in d.ci.items():
            row |= {f"search_{metric}": d.design.search.get(metric, math.nan), f"{metric}_mean": ci.mean,
                    f"{metric}_ci95": ci.half_width}
        rows.append(row | {"rank_search": d.rank_search, "rank_validation": d.rank_validation})
    df = pd.DataFrame(rows)
    summary = validation.to_json()
    df.attrs.update({k: summary[k] for k in ("kendall_tau", "spearman_rho", "top_k_agreement", "k",
                                             "within_noise", "noise_rule", "steps", "seeds", "failed")})
    return df
