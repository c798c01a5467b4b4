"""Cross-field and model-aware checks of a validated space; every problem names the fix."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Any

from pydantic import BaseModel, ValidationError

from search_space.components import EVALUATORS, metric_problem
from search_space.cost import UnknownGeometry
from search_space.errors import InvalidDesign, Problem
from search_space.eval_formats import eval_metric_names
from search_space.fusions import FUSIONS
from search_space.presets import expert_info, looks_like_path, read_config
from search_space.range_checks import range_problems
from search_space.ranges import Choices, is_free, possible_values
from search_space.reduction_checks import tokens_fit, unread_reductions
from search_space.registry import unknown_name_message
from search_space.sampling import compile_space, valid_subsets
from search_space.space import SearchSpace
from search_space.strategies import EARLY_STOPPING, SAMPLERS

Check = Callable[[SearchSpace], list[Problem]]
CHECKS: list[Check] = []
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


VLM_ONLY: set[Check] = set()  # checks of the VLM sections, which other evaluators do not read


def _check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def _vlm_check(fn: Check) -> Check:
    VLM_ONLY.add(fn)
    return _check(fn)


def check(space: SearchSpace) -> list[Problem]:
    """Every cross-field problem of `space` (empty when it is sound). A check that cannot run
    because of a problem found before it (a broken model config, say) adds nothing more; one that
    fails on its own says why."""
    out: list[Problem] = []
    for fn in CHECKS:
        if not space.trains_vlm and fn in VLM_ONLY:
            continue
        if fn is point_designs and out:  # a point is built only from sound fields
            continue
        try:
            out += fn(space)
        except ValueError as exc:  # InvalidDesign is one
            if not out:
                out.append(Problem((), str(exc)))
    return out


def _value_paths(value: Any, path: tuple) -> list[tuple[tuple, Any]]:
    """(YAML path, value) for each value a space field can take."""
    if isinstance(value, Choices):
        return [((*path, "choices", i), v) for i, v in enumerate(value.choices)]
    return [(path, v) for v in possible_values(value)]


@_vlm_check
def subset_bounds(space: SearchSpace) -> list[Problem]:
    pool, bounds, out = list(space.pool), space.subset, []
    base = ("experts", "subset")
    for name in pool:
        if not _NAME.match(name):
            out.append(Problem((*space.expert_path(name),), f"expert name '{name}' must start with "
                               "a letter and hold only letters, digits, '_' and '-'"))
    if bounds.min > len(pool):
        out.append(Problem((*base, "min"), f"subset.min is {bounds.min} but the pool has "
                           f"{len(pool)} experts; lower subset.min or add experts to the pool"))
    if bounds.max is not None and bounds.max > len(pool):
        out.append(Problem((*base, "max"), f"subset.max is {bounds.max} but the pool has "
                           f"{len(pool)} experts; lower subset.max to {len(pool)}"))
    if bounds.max is not None and bounds.min > bounds.max:
        out.append(Problem((*base, "min"), f"subset.min ({bounds.min}) is above subset.max "
                           f"({bounds.max}); swap them"))
    for i, name in enumerate(bounds.require):
        if name not in pool:
            out.append(Problem((*base, "require", i), unknown_name_message("expert", name, pool)))
    for i, group in enumerate(bounds.forbid_together):
        for j, name in enumerate(group):
            if name not in pool:
                out.append(Problem((*base, "forbid_together", i, j),
                                   unknown_name_message("expert", name, pool)))
        if set(group) <= set(bounds.require):
            out.append(Problem((*base, "forbid_together", i), f"{group} are all required, so no "
                               "subset can avoid them; drop one from `require`"))
    if bounds.max is not None and len(bounds.require) > bounds.max:
        out.append(Problem((*base, "require"), f"{len(bounds.require)} experts are required but "
                           f"subset.max is {bounds.max}; raise subset.max"))
    if not out and not valid_subsets(space):
        out.append(Problem(base, "no subset of the pool meets min/max, require and "
                           "forbid_together; loosen one of them"))
    primaries = [n for n, e in space.pool.items() if e.primary]
    if len(primaries) > 1:
        out.append(Problem(space.expert_path(primaries[1]), f"only one expert can be primary "
                           f"(marked: {', '.join(primaries)}); keep `primary: true` on one"))
    return out


def _expert_problems(space: SearchSpace, name: str, spec: BaseModel) -> list[Problem]:
    path, out = space.expert_path(name), []
    for src_path, source in _value_paths(spec.source, (*path, "source")):
        problem = model_folder_problem(source)
        if problem:
            out.append(Problem(src_path, problem))
            continue
        try:
            info = expert_info(source)
        except ValueError as exc:
            out.append(Problem(src_path, str(exc)))
            continue
        if info is None:
            continue
        for layer_path, layers in _value_paths(spec.layers, (*path, "layers")):
            chosen = (layers,) if isinstance(layers, int | str) else tuple(layers)
            if len(set(chosen)) < len(chosen):
                out.append(Problem(layer_path, f"layer list {list(chosen)} repeats a layer; "
                                   "list each layer once"))
            for index in chosen:
                if isinstance(index, str) and not info.depth_ok(index):
                    out.append(Problem(layer_path, f"layer {index}: {source} ({info.family}) has no "
                                       "neck; only SAM experts do, so select a block index instead"))
                elif not info.depth_ok(index):
                    out.append(Problem(layer_path, f"layer {index} is beyond {source}'s depth: "
                                       f"it has {info.num_layers} layers, so use an index from "
                                       f"-{info.num_layers + 1} to {info.num_layers}"))
            widths = {info.layer_width(i) for i in chosen if info.depth_ok(i)}
            if len(widths) > 1 and "mean" in possible_values(spec.merge):
                out.append(Problem(layer_path, f"layers {list(chosen)} of {source} differ in width "
                                   f"({sorted(widths)}), so merge: mean cannot average them; use "
                                   "concat or layerscale"))
        for size_path, size in _value_paths(spec.image_size, (*path, "image_size")):
            if size is not None and info.fixed_image_size and not source.startswith("tiny-") \
                    and size != info.image_size:
                out.append(Problem(size_path, f"{source} takes {info.image_size}px input only; "
                                   f"set image_size: {info.image_size} or leave it out"))
    return out


@_vlm_check
def experts(space: SearchSpace) -> list[Problem]:
    out = [p for name, spec in space.pool.items() for p in _expert_problems(space, name, spec)]
    return out or tokens_fit(space)  # the grids need the experts' configs read


@_vlm_check
def reductions_read(space: SearchSpace) -> list[Problem]:
    """A point's `tokens`/`reduce` must be read (`reduction_checks.unread_reductions`)."""
    return unread_reductions(space)


@_vlm_check
def fusion_needs(space: SearchSpace) -> list[Problem]:
    largest = max((len(s) for s in valid_subsets(space)), default=0)
    options = space.fusion_options()
    base = ("fusion", "choices") if isinstance(space.fusion, Choices) else ("fusion",)
    out = []
    for i, option in enumerate(options):
        need = FUSIONS.get(option.kind).min_experts
        if largest and largest < need:
            path = (*base, i, "kind") if len(base) == 2 else ("fusion", "kind")
            out.append(Problem(path, f"{option.kind} needs at least {need} experts, but every "
                               f"subset that can be sampled has at most {largest}; raise "
                               "subset.max, add experts, or choose another fusion"))
    return out


@_check
def ranges_fit(space: SearchSpace) -> list[Problem]:
    """Each range's values must be valid values of its field (e.g. heads >= 1, square tokens)."""
    return range_problems(space)


@_vlm_check
def language_model_source(space: SearchSpace) -> list[Problem]:
    out = []
    for path, source in _value_paths(space.language_model.source, ("language_model", "source")):
        problem = model_folder_problem(source)
        if problem is None and looks_like_path(source):
            try:
                read_config(FilePath(source).expanduser() / "config.json")
            except ValueError as exc:
                problem = str(exc)
        if problem:
            out.append(Problem(path, problem))
    return out


def model_folder_problem(source: str) -> str | None:
    """Why a local model folder `source` is none (missing, a file, no config.json), or None."""
    folder = FilePath(source).expanduser()
    if not looks_like_path(source):
        return None
    if not folder.is_dir():
        what = "is a file, not a model directory" if folder.is_file() else "does not exist"
        return (f"model directory '{source}' {what}; fix the path, or use a preset (vlmsearch list "
                "presets) or an HF model id")
    if not (folder / "config.json").is_file():
        return (f"'{source}' holds no config.json, so it is no HF model checkpoint; point at the folder "
                "save_pretrained wrote")
    return None


def _skills(space: SearchSpace) -> tuple[str, ...] | None:
    return space.data.skills if space.data.benchmark == "probe" else None


@_check
def objectives(space: SearchSpace) -> list[Problem]:
    out, seen = [], set()
    for i, objective in enumerate(space.objectives):
        problem = metric_problem(objective.metric, _skills(space), eval_metric_names(space.data.eval))
        if problem:
            out.append(Problem(("objectives", i, "metric"), problem))
        if objective.metric in seen:
            out.append(Problem(("objectives", i, "metric"), f"'{objective.metric}' is an "
                               "objective twice; keep one"))
        seen.add(objective.metric)
    for i, constraint in enumerate(space.constraints):
        problem = metric_problem(constraint.metric, _skills(space), eval_metric_names(space.data.eval))
        if problem:
            out.append(Problem(("constraints", i, "metric"), problem))
    if not space.objectives and compile_space(space).free_parameters():
        out.append(Problem(("objectives",), "a search space needs at least one objective, "
                               "e.g. objectives: [{metric: accuracy, direction: maximize}]"))
    return out


@_check
def search_settings(space: SearchSpace) -> list[Problem]:
    out, search = [], space.search
    sampler, stopping = SAMPLERS.get(search.sampler), EARLY_STOPPING.get(search.early_stopping.kind)
    if sampler.needs_finite_space and compile_space(space).size() is None:
        out.append(Problem(("search", "sampler"), f"the {search.sampler} sampler needs a finite space, "
                           "but a float range has no `step`; add a step or use tpe/random"))
    if len(space.objectives) > 1 and stopping.single_objective:
        out.append(Problem(("search", "early_stopping", "kind"), f"{search.early_stopping.kind} "
                           "ranks one objective, but there are several; use mo_asha"))
    if not space.trains_vlm and stopping.stops_early:
        out.append(Problem(("search", "early_stopping", "kind"), f"evaluator '{space.evaluator}' "
                           "reports no intermediate results to stop on; use kind: none"))
    steps = space.max_steps()
    if space.trains_vlm and stopping.stops_early and search.early_stopping.min_steps >= steps:
        out.append(Problem(("search", "early_stopping", "min_steps"), f"min_steps "
                           f"({search.early_stopping.min_steps}) must be below train.steps "
                           f"({steps}); lower it"))
    data = space.data
    if data.benchmark == "llava" and not (data.path and data.image_folder):
        out.append(Problem(("data",), "benchmark llava needs `path` (the conversation JSON) and "
                           "`image_folder`"))
    return out


@_check
def evaluator_parameters(space: SearchSpace) -> list[Problem]:
    """A non-VLM evaluator's parameters: each one it reads, with values it accepts."""
    allowed = EVALUATORS.get(space.evaluator).parameters
    if space.trains_vlm or allowed is None:
        return []
    out = [Problem(("parameters",), f"evaluator '{space.evaluator}' needs parameter '{name}' "
                   f"(one of {', '.join(map(str, values))}); add it")
           for name, values in allowed.items() if name not in space.parameters]
    for name, value in space.parameters.items():
        if name not in allowed:
            out.append(Problem(("parameters", name), f"evaluator '{space.evaluator}': "
                               + unknown_name_message("parameter", name, list(allowed))))
            continue
        for path, v in _value_paths(value, ("parameters", name)):
            if v not in allowed[name]:
                out.append(Problem(path, f"parameter '{name}': " + unknown_name_message(
                    "value", v, list(map(str, allowed[name])))))
    return out


@_vlm_check
def point_designs(space: SearchSpace) -> list[Problem]:
    """A point (no free parameter) must be buildable (fusion needs, interleave grids) and must
    train on its device: positions within the LM's, memory within the device's."""
    from search_space.resources.analytic import design_problems

    compiled = compile_space(space)
    if compiled.free_parameters() or not compiled.subsets:
        return []
    try:
        point = compiled.only_point()
    except ValidationError:  # a cross-field rule of the point; its own check names it
        return []
    try:
        return [Problem((section,), message)
                for section, message in design_problems(point, space.search.resources)]
    except InvalidDesign as exc:
        return [Problem(("fusion",), str(exc))]
    except UnknownGeometry:
        return []


@_check
def stages(space: SearchSpace) -> list[Problem]:
    """With `train.stages`, `train.steps` and `train.lr` are the stages' own; each stage must
    train something its mode lets train."""
    train, out = space.train, []
    if train.stages is None:
        return out
    if "lr" in train.model_fields_set:
        out.append(Problem(("train", "lr"), "train.lr is not read when train.stages is given "
                           "(each stage has its own lr); remove it"))
    if "steps" in train.model_fields_set:
        fixed = not is_free(train.steps) and not any(is_free(stage.steps) for stage in train.stages)
        total = sum(possible_values(stage.steps)[0] for stage in train.stages)
        if not fixed or possible_values(train.steps)[0] != total:
            out.append(Problem(("train", "steps"), "with train.stages, train.steps is the stages' "
                               "total; leave it out (each stage has its steps)"))
    lm_modes = set(possible_values(space.language_model.train))
    expert_modes = {m for e in space.pool.values() for m in possible_values(e.train)}
    for i, stage in enumerate(train.stages):
        for parts in possible_values(stage.train):
            can = {"connector"} | ({"lm"} if lm_modes != {"frozen"} else set()) | (
                {"experts"} if expert_modes - {"frozen"} else set())
            if not set(parts) & can:
                out.append(Problem(("train", "stages", i, "train"), f"stage {i + 1} trains "
                                   f"{list(parts)}, but each is frozen (language_model.train, the "
                                   "experts' train); add connector, or unfreeze what it names"))
    return out


@_vlm_check
def seed_points(space: SearchSpace) -> list[Problem]:
    """Seed points must lie in the space (they are enqueued as its parameters)."""
    from search_space.seed_points import point_parameters

    compiled, out = compile_space(space), []
    for i, seed in enumerate(space.search.seed_points):
        try:
            point_parameters(compiled, seed.model_dump(mode="json", exclude_none=True))
        except (ValueError, KeyError) as exc:
            out.append(Problem(("search", "seed_points", i), f"this seed point is outside the space: "
                               f"{exc}; change it or widen the space"))
    return out
