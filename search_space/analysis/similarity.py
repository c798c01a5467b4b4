"""Linear CKA between representations (Kornblith et al. 2019, "Similarity of Neural Network
Representations Revisited"): how alike two experts' features of the same N images are, invariant
to rotations and isotropic scaling of either. Pure numpy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["NEAR_DUPLICATE", "NearDuplicate", "SimilarityMatrix", "cka_matrix", "linear_cka",
           "near_duplicates"]

NEAR_DUPLICATE = 0.95  # CKA at or above which two experts are flagged as near duplicates


def _centered(x: np.ndarray) -> np.ndarray:
    """Features (N, C) as float64 with each column's mean removed."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, C), got shape {x.shape}")
    return x - x.mean(axis=0, keepdims=True)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of x (N, C1) and y (N, C2), rows the same N samples:
    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), in [0, 1]; nan when either is constant."""
    xc, yc = _centered(x), _centered(y)
    if xc.shape[0] != yc.shape[0]:
        raise ValueError(f"x has {xc.shape[0]} samples and y {yc.shape[0]}; CKA compares the same samples")
    cross = np.linalg.norm(yc.T @ xc) ** 2  # (C2, C1)
    scale = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(cross / scale) if scale > 0 else float("nan")


@dataclass(frozen=True)
class NearDuplicate:
    """Two experts whose CKA reaches the threshold: a search needs only one of them."""

    a: str
    b: str
    cka: float
    threshold: float

    def message(self) -> str:
        return (f"{self.a} and {self.b}: CKA {self.cka:.2f} >= {self.threshold:g}: near duplicates; "
                "a search needs only one of them")


@dataclass(frozen=True)
class SimilarityMatrix:
    """Symmetric CKA matrix: `values[i, j]` between experts `names[i]` and `names[j]` (K, K),
    over `samples` shared samples."""

    names: tuple[str, ...]
    values: np.ndarray  # (K, K) float64, ones on the diagonal
    samples: int = 0

    def __getitem__(self, pair: tuple[str, str]) -> float:
        i, j = (self.names.index(n) for n in pair)
        return float(self.values[i, j])

    def frame(self):  # -> pandas.DataFrame, rows and columns named by expert
        import pandas as pd

        return pd.DataFrame(self.values, index=list(self.names), columns=list(self.names))

    def pairs(self, threshold: float = NEAR_DUPLICATE):  # -> pandas.DataFrame
        """One row per pair (i < j): expert_a, expert_b, cka, near_duplicate (cka >= threshold)."""
        import pandas as pd

        rows = [{"expert_a": a, "expert_b": self.names[j], "cka": float(self.values[i, j]),
                 "near_duplicate": bool(self.values[i, j] >= threshold)}
                for i, a in enumerate(self.names) for j in range(i + 1, len(self.names))]
        return pd.DataFrame(rows, columns=["expert_a", "expert_b", "cka", "near_duplicate"])

    def to_json(self) -> dict[str, object]:
        rows = [[None if np.isnan(v) else round(float(v), 6) for v in row] for row in self.values]
        return {"experts": list(self.names), "samples": self.samples, "cka": rows}


def cka_matrix(features: Mapping[str, np.ndarray]) -> SimilarityMatrix:
    """Linear CKA between every pair of named feature arrays, each (N, C_name) over the same N."""
    names = tuple(features)
    k = len(names)
    samples = len(features[names[0]]) if names else 0
    values = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            values[i, j] = values[j, i] = linear_cka(features[names[i]], features[names[j]])
    return SimilarityMatrix(names, values, samples)


def near_duplicates(matrix: SimilarityMatrix, threshold: float = NEAR_DUPLICATE) -> list[NearDuplicate]:
    """Pairs (i < j, in the matrix's order) with CKA >= threshold, most similar first."""
    found = [NearDuplicate(a, matrix.names[j], float(matrix.values[i, j]), threshold)
             for i, a in enumerate(matrix.names) for j in range(i + 1, len(matrix.names))
             if matrix.values[i, j] >= threshold]
    return sorted(found, key=lambda d: -d.cka)
