"""Objectives as a matrix, non-dominated sorting and hypervolume (plain numpy).

Everything here works on *minimisation* form: `to_minimize` flips maximised columns, so a point
dominates another when it is <= in every column and < in one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from search_space.space import Constraint, Objective


def to_minimize(values: np.ndarray, objectives: Sequence[Objective]) -> np.ndarray:
    """(n, m) values in the objectives' directions -> (n, m) to minimise."""
    signs = np.array([-1.0 if o.direction == "maximize" else 1.0 for o in objectives])
    return np.asarray(values, dtype=float).reshape(-1, len(objectives)) * signs


def objective_matrix(rows: Sequence[Mapping[str, float]], objectives: Sequence[Objective]
                     ) -> np.ndarray:
    """(n, m) minimisation matrix from metric dicts."""
    raw = np.array([[row[o.metric] for o in objectives] for row in rows], dtype=float)
    return to_minimize(raw.reshape(len(rows), len(objectives)), objectives)


def feasible(row: Mapping[str, float], constraints: Sequence[Constraint]) -> bool:
    return all(c.metric in row and c.satisfied(row[c.metric]) for c in constraints)


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_ranks(points: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Rank of every row (0 = the Pareto front): fast non-dominated sorting, O(n^2 m) in all.

    The domination relation is built once (in row chunks, to bound memory); fronts are then
    peeled by decrementing each row's count of dominators, not by re-scanning all pairs.
    """
    points = np.asarray(points, dtype=float)
    n = len(points)
    ranks = np.full(n, -1, dtype=int)
    if n == 0:
        return ranks
    dominates_ = np.zeros((n, n), dtype=bool)  # [i, j]: row i dominates row j
    for start in range(0, n, chunk):
        block = points[start:start + chunk, None, :]                        # (c, 1, m)
        le = np.all(block <= points[None, :, :], axis=2)                    # (c, n)
        lt = np.any(block < points[None, :, :], axis=2)
        dominates_[start:start + chunk] = le & lt
    count = dominates_.sum(axis=0)                                          # dominators of each row
    front = np.flatnonzero(count == 0)
    rank = 0
    while front.size:
        ranks[front] = rank
        count = count - dominates_[front].sum(axis=0)
        count[ranks >= 0] = -1                                              # already ranked
        front = np.flatnonzero(count == 0)
        rank += 1
    return ranks


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """The first front alone (== `non_dominated_ranks(points) == 0`), in O(n log n + n f m).

    Rows in lexicographic order: a row can be dominated only by rows before it, and if by any
    then by one already on the front (domination is transitive), so each row is checked against
    the front found so far, never against all n rows (a 62k-row table: ~1 s, not an n x n matrix).
    """
    points = np.asarray(points, dtype=float)
    mask = np.zeros(len(points), dtype=bool)
    if len(points) == 0:
        return mask
    order = np.lexsort(points.T[::-1])
    front = np.empty((0, points.shape[1]))
    for i in order:
        row = points[i]
        if front.size and np.any(np.all(front <= row, axis=1) & np.any(front < row, axis=1)):
            continue
        mask[i] = True
        front = np.vstack([front, row])
    return mask


def hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Volume dominated by `points` (minimisation) and bounded by `reference`."""
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[pareto_mask(pts)]
    return _hv(np.unique(pts, axis=0), ref)


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    if pts.shape[1] == 2:
        order = pts[np.argsort(pts[:, 0])]
        volume, best_y = 0.0, ref[1]
        for x, y in order:
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return float(volume)
    # slice along the last axis: each slab's (m-1)-volume times its thickness
    order = pts[np.argsort(pts[:, -1])]
    volume = 0.0
    for i in range(len(order)):
        upper = order[i + 1, -1] if i + 1 < len(order) else ref[-1]
        if upper > order[i, -1]:
            volume += _hv(order[: i + 1, :-1], ref[:-1]) * (upper - order[i, -1])
    return float(volume)


def hypervolume_contributions(points: np.ndarray, reference: Sequence[float]) -> np.ndarray:
    """Exclusive hypervolume of each point: HV(all) - HV(all but it)."""
    pts = np.asarray(points, dtype=float)
    total = hypervolume(pts, reference)
    return np.array([total - hypervolume(np.delete(pts, i, axis=0), reference)
                     for i in range(len(pts))])


def reference_point(objectives: Sequence[Objective], constraints: Sequence[Constraint],
                    rows: Sequence[Mapping[str, float]], bounds: Mapping[str, float] | None = None
                    ) -> np.ndarray:
    """A hypervolume reference point in minimisation form, stable as trials come in.

    Accuracies (maximised, in [0, 1]) use 0; a minimised metric uses its constraint's `max`, else
    a known bound (e.g. the space's largest visual_tokens), else 1.1x the worst value seen.
    """
    bounds = bounds or {}
    ref = []
    for o in objectives:
        caps = [c.max for c in constraints if c.metric == o.metric and c.max is not None]
        seen = [row[o.metric] for row in rows if o.metric in row]
        if o.direction == "maximize":
            floor = 0.0 if o.metric.startswith("accuracy") else (min(seen) * 0.9 if seen else 0.0)
            ref.append(-floor)
        elif caps:
            ref.append(min(caps))
        elif o.metric in bounds:
            ref.append(bounds[o.metric])
        else:
            ref.append(max(seen) * 1.1 if seen else 1.0)
    return np.asarray(ref, dtype=float)


def study_front(rows: Sequence[Mapping[str, float]], objectives: Sequence[Objective],
                constraints: Sequence[Constraint], bounds: Mapping[str, float] | None = None
                ) -> tuple[list[int | None], float]:
    """Pareto rank of each row (None when infeasible) and the hypervolume of the feasible front."""
    usable = [i for i, row in enumerate(rows)
              if feasible(row, constraints) and all(o.metric in row for o in objectives)]
    ranks: list[int | None] = [None] * len(rows)
    if not usable:
        return ranks, 0.0
    matrix = objective_matrix([rows[i] for i in usable], objectives)
    for i, rank in zip(usable, non_dominated_ranks(matrix), strict=True):
        ranks[i] = int(rank)
    ref = reference_point(objectives, constraints, [rows[i] for i in usable], bounds)
    return ranks, hypervolume(matrix, ref)
