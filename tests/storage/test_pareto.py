"""The Pareto front and ranks, stored and recomputed, equal a brute-force computation."""

from __future__ import annotations

import numpy as np
import pytest

from search_space import compile_space, parse, space_cost_range
from search_space.events import Front, StudyInfo
from search_space.pareto import study_front
from storage import ResultsStore
from tests.storage.helpers import SPACE, result

# three objectives, two constraints: ties (integer tokens) and infeasible trials are common
THREE = SPACE.replace("  - {metric: visual_tokens, direction: minimize}\n",
                      "  - {metric: visual_tokens, direction: minimize}\n"
                      "  - {metric: latency_ms, direction: minimize}\n").replace(
    "  - {metric: visual_tokens, max: 24}\n", "  - {metric: visual_tokens, max: 24}\n"
    "  - {metric: accuracy, min: 0.2}\n")
SPACE3 = parse(THREE).space
MINIMISE = [(o.metric, -1.0 if o.direction == "maximize" else 1.0) for o in SPACE3.objectives]


def brute_force_ranks(rows: dict[int, dict[str, float]]) -> dict[int, int | None]:
    """Feasible rows peeled front by front, by pairwise dominance in plain Python."""
    feasible = {n: [m[k] * s for k, s in MINIMISE] for n, m in rows.items()
                if m["visual_tokens"] <= 24 and m["accuracy"] >= 0.2}

    def dominates(a: list[float], b: list[float]) -> bool:
        pairs = list(zip(a, b, strict=True))
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

    ranks: dict[int, int | None] = {n: None for n in rows}
    left, rank = set(feasible), 0
    while left:
        front = {n for n in left if not any(dominates(feasible[o], feasible[n]) for o in left if o != n)}
        ranks.update({n: rank for n in front})
        left -= front
        rank += 1
    return ranks


def random_study(store: ResultsStore, n: int, seed: int) -> dict[int, dict[str, float]]:
    """`n` trials with random metrics (coarse, so ties happen); returns complete trials' metrics."""
    rng = np.random.default_rng(seed)
    store.study_started(StudyInfo("random", SPACE3, THREE))
    complete: dict[int, dict[str, float]] = {}
    for number in range(n):
        r = result("random", number, status=str(rng.choice(["complete"] * 8 + ["pruned", "failed"])))
        if r.status == "complete":
            r.metrics.update(accuracy=round(float(rng.uniform(0, 1)), 1),
                             visual_tokens=int(rng.choice([4, 8, 16, 24, 32])),
                             latency_ms=round(float(rng.uniform(1, 5)), 1))
            complete[number] = dict(r.metrics)
        store.trial_started("random", number, r.config)
        store.trial_finished("random", r)
    return complete


@pytest.mark.parametrize("seed", [0, 1])
def test_front_and_ranks_equal_brute_force(store: ResultsStore, seed: int) -> None:
    complete = random_study(store, 150, seed)
    expected = brute_force_ranks(complete)
    assert any(r is None for r in expected.values()) and max(r or 0 for r in expected.values()) >= 2

    ranks, volume = store.ranks("random")  # no front was ever stored: recomputed
    assert {n: r for n, r in ranks.items() if n in complete} == expected
    numbers = sorted(complete)
    cost = space_cost_range(compile_space(SPACE3))
    bounds = {"visual_tokens": cost.tokens[1] + 1.0, "positions_used": cost.positions[1] + 1.0}
    _, driver_volume = study_front([complete[n] for n in numbers], SPACE3.objectives, SPACE3.constraints,
                                   bounds)  # as the search driver computes it
    assert volume == pytest.approx(driver_volume)

    store.front_updated("random", Front(expected, volume, 150))  # what the search reports
    front = store.pareto_front("random")
    assert not front.recomputed
    assert {t.number for t in front.trials} == {n for n, r in expected.items() if r == 0}
    assert all(t.pareto_rank == 0 and t.status == "complete" for t in front.trials)
    recomputed = store.pareto_front("random", recompute=True)
    assert recomputed.recomputed and [t.number for t in recomputed.trials] == [t.number for t in front.trials]
    assert recomputed.hypervolume == pytest.approx(front.hypervolume)
    assert store.ranks("random") == store.ranks("random", recompute=True)
    accuracies = [t.metrics["accuracy"] for t in front.trials]
    assert accuracies == sorted(accuracies, reverse=True)  # sorted by the first objective


def test_a_stale_stored_front_is_recomputed(store: ResultsStore) -> None:
    complete = random_study(store, 40, 3)
    expected = brute_force_ranks(complete)
    store.front_updated("random", Front(expected, 0.0, 40))
    store.trial_finished("random", result("random", 40, status="pruned"))  # no front update after it
    front = store.pareto_front("random")
    assert front.recomputed
    assert {t.number for t in front.trials} == {n for n, r in expected.items() if r == 0}
    assert {t.number: t.pareto_rank for t in store.trials("random", status="complete")} == expected
