"""One rule for what a sampler is told about an infeasible point (issue 20): the Ray backend told
0.0 for a minimised objective the point lacked (the best possible value), the Optuna backend 1e12."""

from __future__ import annotations

import json
from types import SimpleNamespace

import optuna

from search_space import parse
from trials.search.study import objective_values

SPACE = """\
name: rule
experts: {clip: {source: tiny-clip, tokens: 16}}
objectives:
  - {metric: accuracy, direction: maximize}
  - {metric: latency_ms, direction: minimize}
  - {metric: visual_tokens, direction: minimize}
"""


def test_an_infeasible_point_is_worst_where_it_has_no_value() -> None:
    space = parse(SPACE).space
    assert objective_values(space, {"visual_tokens": 16.0}, infeasible=True) == [0.0, 1e12, 16.0]
    measured = {"accuracy": 0.5, "latency_ms": 3.0, "visual_tokens": 16.0}
    assert objective_values(space, measured) == [0.5, 3.0, 16.0]


def test_the_ray_searcher_tells_the_same_values() -> None:
    from trials.search import ray_backend

    space = parse(SPACE).space
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    searcher = object.__new__(ray_backend._Searcher)  # its tell path alone, without a Ray run
    searcher.key, searcher._ot_study, searcher._completed_trials = "rule", study, set()
    searcher._ot_trials = {"t0": study.ask()}
    ray_backend._LIVE["rule"] = SimpleNamespace(spec=SimpleNamespace(space=space))
    try:
        searcher.on_trial_complete("t0", {ray_backend.STATUS: "failed", "visual_tokens": 16.0,
                                          ray_backend.RESULT: json.dumps({"infeasible": True})})
    finally:
        del ray_backend._LIVE["rule"]
    assert study.trials[0].values == [0.0, 1e12, 16.0]
