"""The resource model over a big pool samples every part of it (issue 19, class 10)."""

from __future__ import annotations

from search_space import compile_space, parse
from search_space.resources.space import BIG_POOL_DESIGNS, _spread, space_estimate
from search_space.space import Resources
from tests.search_space.big_pool import pool_space


def test_a_big_pools_designs_come_from_its_smallest_and_largest_subsets() -> None:
    compiled = compile_space(parse(pool_space(12)).space)
    assert len(compiled.subsets) == 4095
    first_round = {tuple(sorted(p.experts)) for p, _ in zip(_spread(compiled), range(300), strict=False)}
    assert tuple(sorted(compiled.subsets[-1])) in first_round, "the 12-expert subset is sampled"
    assert {s for s in first_round if len(s) == 1} == {(f"e{i}",) for i in range(12)}
    estimate = space_estimate(compiled, Resources())
    assert estimate.truncated and estimate.designs == BIG_POOL_DESIGNS
    low, high = estimate.ranges["total_params"]
    single = space_estimate(compile_space(parse(pool_space(1)).space), Resources()).ranges["total_params"]
    assert low == single[0] and high > single[1], "the smallest design and bigger ones are in range"
