"""Expert similarity on a space's data: each pool expert's features of the first N training
images, built and run the way trials build and run experts (`ExpertTokens`, the feature cache),
compared by linear CKA (search_space.analysis).

An expert's features: its first-choice design (`pool_experts`), frozen, run untiled on the
images; each selected layer on its reduced grid (the rows the trial's connector reads, as cached)
mean-pooled over tokens, the layers of a merge concatenated along channels (so the linear kernel
is the sum of the layers' kernels) -> (N, sum C_i).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from search_space import ExpertConfig, SearchSpace
from search_space.analysis import SimilarityMatrix, cka_matrix, pool_experts
from trials.cache import FeatureCache
from trials.data import ChatDataset, load_benchmark
from trials.data.images import take
from trials.features import cached_layers, feature_key
from trials.train import device_of
from trials.vlm.experts import ExpertTokens

__all__ = ["SIMILARITY_IMAGES", "expert_similarity", "pool_features"]

SIMILARITY_IMAGES = 256  # training images each expert sees by default


def expert_similarity(space: SearchSpace, images: int = SIMILARITY_IMAGES, device: str = "auto",
                      cache: FeatureCache | None = None) -> SimilarityMatrix:
    """Linear CKA between every pair of the space's pool experts (a point: its experts) on the
    first `images` training images; `.names`, `.values` (K, K), `.frame()` (a DataFrame)."""
    return cka_matrix(pool_features(space, images, device, cache))


def pool_features(space: SearchSpace, images: int = SIMILARITY_IMAGES, device: str = "auto",
                  cache: FeatureCache | None = None) -> dict[str, np.ndarray]:
    """Each pool expert's mean-pooled features (N, C) of the first `images` training images
    (N = images, or fewer when the split has fewer images), in pool order."""
    if images < 1:
        raise ValueError(f"images must be at least 1, got {images}")
    cache = cache if cache is not None else FeatureCache(None)
    run_on = device_of(device)
    out: dict[str, np.ndarray] = {}
    split: tuple[ChatDataset, ChatDataset] | None = None  # (train, its first images)
    for name, tokens in _experts(pool_experts(space), run_on):
        if split is None:  # the pad colour (pad_to_square) is the first expert's, as in a trial
            split = _first_images(space, tokens, images)
        out[name] = _pooled(_layers(tokens, *split, cache, run_on))
    return out


def _experts(configs: dict[str, ExpertConfig], device: torch.device) -> Iterator[tuple[str, ExpertTokens]]:
    """Each expert built frozen (one at a time: only the one running is held); ValueError naming
    the expert when it cannot be built or loaded."""
    for name, cfg in configs.items():
        try:
            tokens = ExpertTokens(cfg.model_copy(update={"train": "frozen"})).to(device)
        except (OSError, ValueError) as exc:
            raise ValueError(f"expert '{name}' ({cfg.source}) cannot be loaded: {exc}") from exc
        yield name, tokens


def _first_images(space: SearchSpace, tokens: ExpertTokens, n: int) -> tuple[ChatDataset, ChatDataset]:
    """The training split and its first `n` records that have an image (as a split of their own)."""
    mean = tokens.expert.mean.flatten().tolist()
    pad = tuple(int(m * 255) for m in mean) if space.data.pad_to_square else None
    train, _ = load_benchmark(space.data, pad=pad)
    idx = [i for i, has in enumerate(train.has_image) if has][:n]
    if not idx:
        raise ValueError(f"the training data of '{space.name}' has no image to compare experts on")
    first = ChatDataset(train.name, take(train.images, idx), [()] * len(idx), [True] * len(idx))
    return train, first


def _layers(tokens: ExpertTokens, train: ChatDataset, first: ChatDataset, cache: FeatureCache,
            device: torch.device) -> list[torch.Tensor]:
    """The expert's pooled layers for `first`'s rows, each (N, T, C_i): read from the whole
    split's cache entry when a trial has written it, else computed for those rows alone (and
    cached)."""
    if len(first) < len(train) and feature_key(tokens, train) in cache:
        rows = [i for i, has in enumerate(train.has_image) if has][:len(first)]
        return [layer.tokens[rows] for layer in cached_layers(tokens, train, cache, device)]
    return [layer.tokens[:] for layer in cached_layers(tokens, first, cache, device)]


def _pooled(layers: list[torch.Tensor]) -> np.ndarray:
    """Layers, each (N, T, C_i) -> mean over tokens, concatenated over layers: (N, sum C_i) float64."""
    pooled = [layer.to(torch.float64).mean(dim=1) for layer in layers]  # each (N, C_i)
    return torch.cat(pooled, dim=1).numpy()
