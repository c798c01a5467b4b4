"""Expert similarity on a space's data (trials.similarity): real tiny experts, built and cached the
way trials build them, compared by linear CKA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search_space import SearchSpace, parse
from search_space.analysis import near_duplicates
from trials import FeatureCache, expert_similarity, pool_features

SPACE = """
name: similar
data: {benchmark: probe, train_size: 48, eval_size: 16, image_size: 64, seed: 0}
experts:
  pool:
    clip: {source: tiny-clip, layers: {choices: [[-1, -2], -1]}, tokens: {choices: [16, 4]}}
    clip_copy: {source: tiny-clip, layers: [-1, -2], tokens: 16}
    dinov2: {source: tiny-dinov2, tokens: 16}
    sam: {source: tiny-sam, image_size: 128, tokens: 16}
fusion: {kind: sequence_concat}
objectives: [{metric: accuracy, direction: maximize}]
"""


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return parse(SPACE).space


@pytest.mark.slow
def test_the_same_expert_twice_is_a_near_duplicate_and_others_are_not(space: SearchSpace) -> None:
    matrix = expert_similarity(space, images=32, device="cpu")
    assert matrix.names == ("clip", "clip_copy", "dinov2", "sam") and matrix.samples == 32
    assert matrix["clip", "clip_copy"] == pytest.approx(1.0, abs=1e-9)  # same source, seed: same weights
    for other in ("dinov2", "sam"):
        assert matrix["clip", other] < 0.8
        assert matrix["clip", other] == pytest.approx(matrix["clip_copy", other], abs=1e-9)
    assert np.allclose(matrix.values, matrix.values.T)
    assert ((matrix.values >= 0.0) & (matrix.values <= 1.0 + 1e-9)).all()
    first = near_duplicates(matrix)[0]
    assert (first.a, first.b) == ("clip", "clip_copy")


@pytest.mark.slow
def test_features_are_the_first_choice_layers_mean_pooled_and_concatenated(space: SearchSpace) -> None:
    features = pool_features(space, images=8, device="cpu")
    # clip's first choice is layers [-1, -2]: two 64-wide layers side by side; one layer else
    assert {k: v.shape for k, v in features.items()} == {
        "clip": (8, 128), "clip_copy": (8, 128), "dinov2": (8, 48), "sam": (8, 32)}
    again = pool_features(space, images=8, device="cpu")
    assert all(np.array_equal(features[k], again[k]) for k in features)  # deterministic
    assert not np.allclose(features["clip"][:, :64], features["clip"][:, 64:])  # two different layers


@pytest.mark.slow
def test_features_come_from_the_feature_cache(space: SearchSpace, tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    whole = pool_features(space, images=1000, device="cpu", cache=cache)  # the whole split: 48
    assert {v.shape[0] for v in whole.values()} == {48}
    assert cache.stats.misses == 3  # clip and clip_copy are the same expert and design: one entry
    reread = FeatureCache(tmp_path / "cache")
    first = pool_features(space, images=10, device="cpu", cache=reread)  # rows of the whole split's entries
    assert reread.stats.misses == 0 and reread.stats.disk_hits == 3
    fresh = pool_features(space, images=10, device="cpu")
    assert all(np.allclose(first[k], fresh[k], atol=1e-6) for k in first)
    assert all(np.allclose(first[k], whole[k][:10], atol=1e-6) for k in first)


POINT = """
name: similar-point
data: {benchmark: probe, train_size: 16, eval_size: 8, image_size: 64, seed: 0}
experts:
  clip: {source: tiny-clip, tokens: 16}
  clip_copy: {source: tiny-clip, tokens: 16}
fusion: {kind: sequence_concat}
projector: linear
train: {steps: 1, batch_size: 4, lr: 1.0e-3, seed: 0}
"""


@pytest.mark.slow
def test_a_point_compares_its_own_experts() -> None:
    point = parse(POINT).space
    matrix = expert_similarity(point, images=8, device="cpu")
    assert matrix.names == ("clip", "clip_copy") and matrix.samples == 8
    assert matrix["clip", "clip_copy"] == pytest.approx(1.0, abs=1e-9)


def test_images_must_be_positive(space: SearchSpace) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        pool_features(space, images=0)
