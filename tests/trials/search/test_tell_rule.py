"""One rule for what a sampler is told (issue 20): the Ray backend told 0.0 for a minimised
objective an infeasible point lacked (the best possible value), the Optuna backend 1e12. Both
backends now tell through `SearchBackend.tell`; each is driven here down its own tell path."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from search_space import SearchSpace, compile_space, parse
from search_space.events import Sinks
from search_space.result import Failure, TrialResult
from tests.trials.search.search_helpers import make_spec
from trials.search.study import objective_values

SPACE = """\
name: rule
experts: {clip: {source: tiny-clip, tokens: 16}}
objectives:
  - {metric: accuracy, direction: maximize}
  - {metric: latency_ms, direction: minimize}
  - {metric: visual_tokens, direction: minimize}
constraints:
  - {metric: visual_tokens, max: 8}
"""


def test_an_infeasible_point_is_worst_where_it_has_no_value() -> None:
    space = parse(SPACE).space
    assert objective_values(space, {"visual_tokens": 16.0}, infeasible=True) == [0.0, 1e12, 16.0]
    measured = {"accuracy": 0.5, "latency_ms": 3.0, "visual_tokens": 16.0}
    assert objective_values(space, measured) == [0.5, 3.0, 16.0]


def results(space: SearchSpace) -> dict[str, TrialResult]:
    point = next(compile_space(space).points())
    infeasible = Failure("invalid", "infeasible before training: visual_tokens = 16", infeasible=True)
    return {
        "infeasible": TrialResult(point, "failed", 0, {"visual_tokens": 16.0}, failure=infeasible),
        "complete": TrialResult(point, "complete", 3, {"accuracy": 0.5, "latency_ms": 3.0,
                                                       "visual_tokens": 16.0}),
        "pruned": TrialResult(point, "pruned", 1, {"accuracy": 0.1}),
        "failed": TrialResult(point, "failed", 1, failure=Failure("nan", "non-finite loss")),
    }


def told_by_optuna_backend(tmp_path: Path, result: TrialResult) -> optuna.trial.FrozenTrial:
    from trials.search.optuna_backend import OptunaBackend

    backend = OptunaBackend(make_spec(tmp_path, SPACE), Sinks([]))
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    backend.record_and_tell(study, study.ask(), result)
    return study.trials[0]


def told_by_ray_searcher(tmp_path: Path, result: TrialResult) -> optuna.trial.FrozenTrial:
    from trials.search import ray_backend

    ray_backend.RayBackend(make_spec(tmp_path, SPACE), Sinks([]))  # known to its searcher by the key
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    searcher = object.__new__(ray_backend._Searcher)  # its tell path alone, without a Ray run
    searcher.key, searcher._ot_study, searcher._completed_trials = "rule", study, set()
    searcher.configs = {}
    searcher._ot_trials = {"t0": study.ask()}
    last = {**result.metrics, "config": {ray_backend.POINT: result.config.model_dump_json()}}
    if result.status != "pruned":  # a trial its scheduler stopped has no final report
        last[ray_backend.RESULT] = json.dumps(result.to_json())
    try:
        searcher.on_trial_complete("t0", last)
    finally:
        del ray_backend._LIVE["rule"]
    return study.trials[0]


@pytest.mark.parametrize("kind", ["infeasible", "complete", "pruned", "failed"])
def test_both_backends_tell_the_same(tmp_path: Path, kind: str) -> None:
    space = parse(SPACE).space
    result = results(space)[kind]
    optuna_side = told_by_optuna_backend(tmp_path / "o", result)
    ray_side = told_by_ray_searcher(tmp_path / "r", result)
    for told in (optuna_side, ray_side):
        expected = {"infeasible": [0.0, 1e12, 16.0], "complete": [0.5, 3.0, 16.0]}.get(kind)
        assert told.values == expected
        state = {"pruned": optuna.trial.TrialState.PRUNED, "failed": optuna.trial.TrialState.FAIL}
        assert told.state == state.get(kind, optuna.trial.TrialState.COMPLETE)
    assert constraints(optuna_side) == constraints(ray_side)
    if kind in ("infeasible", "complete"):
        assert list(constraints(ray_side).values()) == [8.0]  # 16 visual tokens, at most 8
    assert ray_side.user_attrs.get("failure_reason") == ("nan" if kind == "failed" else None)


def constraints(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    return {k: v for k, v in trial.system_attrs.items() if k.startswith("constraints")}
