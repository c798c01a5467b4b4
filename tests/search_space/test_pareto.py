"""Non-dominated sorting and hypervolume against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from search_space.pareto import (
    hypervolume,
    hypervolume_contributions,
    non_dominated_ranks,
    objective_matrix,
    pareto_mask,
)
from search_space.space import Objective


def brute_ranks(points: np.ndarray) -> np.ndarray:
    ranks = np.full(len(points), -1)
    remaining = set(range(len(points)))
    rank = 0
    while remaining:
        front = {i for i in remaining
                 if not any(np.all(points[j] <= points[i]) and np.any(points[j] < points[i])
                            for j in remaining)}
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


@pytest.mark.parametrize("m", [2, 3, 4])
def test_ranks_match_brute_force(m: int) -> None:
    rng = np.random.default_rng(m)
    points = rng.integers(0, 6, size=(60, m)).astype(float)  # ties included
    assert non_dominated_ranks(points).tolist() == brute_ranks(points).tolist()


@pytest.mark.parametrize("m", [2, 3])
def test_pareto_mask_is_the_first_front(m: int) -> None:
    rng = np.random.default_rng(m)
    points = rng.integers(0, 6, size=(300, m)).astype(float)  # many ties and duplicates
    assert (pareto_mask(points) == (brute_ranks(points) == 0)).all()
    assert pareto_mask(np.empty((0, m))).shape == (0,)


def test_hypervolume_2d_exact() -> None:
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0]])
    # staircase under reference (4, 4): 3*1 + 2*1 + 1*1
    assert hypervolume(points, [4, 4]) == pytest.approx(6.0)


def test_hypervolume_matches_grid_count() -> None:
    rng = np.random.default_rng(3)
    points = rng.integers(0, 8, size=(12, 3)).astype(float)
    ref = [8, 8, 8]
    cells = sum(1 for c in itertools.product(range(8), repeat=3)
                if any(np.all(p <= np.array(c)) for p in points))
    assert hypervolume(points, ref) == pytest.approx(cells)


def test_contributions_and_directions() -> None:
    objectives = [Objective(metric="accuracy", direction="maximize"),
                  Objective(metric="visual_tokens", direction="minimize")]
    rows = [{"accuracy": 0.9, "visual_tokens": 80}, {"accuracy": 0.8, "visual_tokens": 16},
            {"accuracy": 0.7, "visual_tokens": 80}]
    matrix = objective_matrix(rows, objectives)
    assert non_dominated_ranks(matrix).tolist() == [0, 0, 1]
    contrib = hypervolume_contributions(matrix, [0.0, 100.0])
    assert contrib[2] == pytest.approx(0.0) and contrib[0] > 0 and contrib[1] > 0
