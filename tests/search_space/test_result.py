"""The trial JSON is complete: every field a result carries survives to_json -> result_from_json
(`reused_from`, `infeasible` and `host` were dropped and patched back in three places)."""

from __future__ import annotations

import json

from search_space import compile_space, parse
from search_space.result import Failure, TrialResult, result_from_json

SPACE = "name: rt\nexperts: {clip: {source: tiny-clip, tokens: 16}}\n"


def test_every_field_round_trips_through_json() -> None:
    point = next(compile_space(parse(SPACE).space).points())
    results = [
        TrialResult(point, "complete", 12, {"accuracy": 0.5, "visual_tokens": 16.0}, study="rt", number=3,
                    pareto_rank=0, reused_from=1, host="node-a"),
        TrialResult(point, "failed", 0, {"visual_tokens": 16.0}, study="rt", number=4,
                    failure=Failure("invalid", "infeasible before training", infeasible=True)),
        TrialResult(point, "failed", 2, failure=Failure("nan", "non-finite loss"), study="rt", number=5),
    ]
    for result in results:
        data = json.loads(json.dumps(result.to_json()))
        back = result_from_json(data, "rt")
        assert back.to_json() == result.to_json()
        assert (back.reused_from, back.host, back.infeasible, back.failure) == \
            (result.reused_from, result.host, result.infeasible, result.failure)
    assert results[1].to_json()["infeasible"] is True and results[0].to_json()["reused_from"] == 1


def test_json_written_before_the_new_fields_reads_as_none_of_them() -> None:
    point = next(compile_space(parse(SPACE).space).points())
    old = TrialResult(point, "complete", 12, {"accuracy": 0.5}).to_json()
    for key in ("reused_from", "infeasible", "host"):
        del old[key]
    back = result_from_json(old, "rt")
    assert (back.reused_from, back.host, back.infeasible) == (None, None, False)
