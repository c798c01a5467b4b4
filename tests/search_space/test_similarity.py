"""Linear CKA (search_space.analysis.similarity) against its defining properties and the Gram /
HSIC form of Kornblith et al. 2019."""

from __future__ import annotations

import numpy as np
import pytest

from search_space.analysis import cka_matrix, linear_cka, near_duplicates


def _features(seed: int, n: int = 64, c: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, c))


def _orthogonal(c: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(c, c)))
    return q


def _gram_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA as HSIC of centered Gram matrices: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),
    K = X X^T, L = Y Y^T, HSIC(K, L) = tr(K H L H) (the 1/(n-1)^2 factors cancel)."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h))

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def test_cka_of_a_representation_with_itself_is_one() -> None:
    x = _features(0)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_invariant_to_orthogonal_transforms_and_isotropic_scaling() -> None:
    x, y = _features(1), _features(2, c=7)
    base = linear_cka(x, y)
    assert linear_cka(x @ _orthogonal(12, 3), y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x, 5.0 * y @ _orthogonal(7, 4)) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x + 3.0, y - 1.0) == pytest.approx(base, abs=1e-12)  # centering: offsets too
    assert linear_cka(x @ _orthogonal(12, 5), x * 0.01) == pytest.approx(1.0, abs=1e-12)


def test_not_invariant_to_a_general_invertible_linear_map() -> None:
    x = _features(6, n=200, c=4)
    stretch = np.diag([1.0, 1.0, 1.0, 50.0])  # invertible, but one direction dominates after it
    assert np.linalg.matrix_rank(stretch) == 4
    assert linear_cka(x, x @ stretch) < 0.5


def test_agrees_with_the_gram_hsic_form_on_random_data() -> None:
    for seed in range(5):
        x = _features(10 + seed, n=40, c=9)
        y = x[:, :3] @ np.random.default_rng(seed).normal(size=(3, 5)) + _features(20 + seed, n=40, c=5)
        assert linear_cka(x, y) == pytest.approx(_gram_cka(x, y), rel=1e-10)


def test_values_lie_in_zero_one() -> None:
    values = [linear_cka(_features(s), _features(s + 100, c=c)) for s in range(10) for c in (1, 3, 30)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert 0.0 < min(values) < max(values) < 1.0


def test_a_constant_representation_gives_nan_and_sample_counts_must_agree() -> None:
    assert np.isnan(linear_cka(np.ones((10, 3)), _features(0, n=10)))
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(_features(0, n=10), _features(1, n=11))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        linear_cka(np.ones(10), np.ones(10))


def test_matrix_is_labelled_symmetric_and_flags_near_duplicates() -> None:
    x = _features(30)
    feats = {"a": x, "a_rotated": 2.0 * x @ _orthogonal(12, 31), "b": _features(32, c=5)}
    matrix = cka_matrix(feats)
    assert matrix.names == ("a", "a_rotated", "b")
    assert np.allclose(matrix.values, matrix.values.T) and np.allclose(np.diag(matrix.values), 1.0)
    assert matrix["a", "a_rotated"] == pytest.approx(1.0)
    assert matrix["b", "a"] == pytest.approx(linear_cka(x, feats["b"]))
    frame = matrix.frame()
    assert list(frame.columns) == list(frame.index) == ["a", "a_rotated", "b"]
    pairs = near_duplicates(matrix, threshold=0.95)
    assert [(p.a, p.b) for p in pairs] == [("a", "a_rotated")]
    assert pairs[0].message() == ("a and a_rotated: CKA 1.00 >= 0.95: near duplicates; "
                                  "a search needs only one of them")
    assert near_duplicates(matrix, threshold=0.0)[0].cka >= near_duplicates(matrix, threshold=0.0)[-1].cka
    assert len(near_duplicates(matrix, threshold=0.0)) == 3
