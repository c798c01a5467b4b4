"""What a data split feeds the VLM, a batch at a time: the frozen experts' features (computed
once, through the feature cache, and read back a batch of rows at a time) and the images for
experts that train and so run live (decoded per batch when the split is read from files)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from trials.cache import FeatureCache, Layers, cache_key
from trials.data import ChatDataset, QADataset
from trials.data.images import batches
from trials.vlm.experts import ExpertTokens
from trials.vlm.model import VLM
from trials.vlm.reduce import Features

FEATURE_BATCH = 64               # images decoded, and at most run through an expert, at a time
FEATURE_BATCH_BYTES = 16 << 20   # ... fewer when one batch's features would pass this many bytes
Index = Tensor | Sequence[int]


@dataclass
class FeatureBatches:
    """A split's cached features (frozen experts, every sample; on disk when large) and its
    images (live experts)."""

    cached: dict[str, Layers]
    data: QADataset
    live: bool  # some expert trains: batches need their images

    def batch(self, idx: Index, device: torch.device) -> dict[str, list[Features]]:
        """The cached experts' layers for samples `idx`, each (len(idx), N, C) on `device`."""
        return {name: [Features(f.tokens[idx].to(device), f.grid) for f in layers]
                for name, layers in self.cached.items()}

    def images(self, idx: Index, device: torch.device) -> Tensor | None:
        """uint8 images (len(idx), 3, H, W) when an expert runs live, else None."""
        return self.data.images[idx].to(device) if self.live else None


def split_features(tokens: ExpertTokens, data: QADataset, device: torch.device) -> Iterator[list[Features]]:
    """The expert's pooled layers over the split in order, on the CPU, a batch at a time.

    The first forward takes one image and measures a sample's feature bytes; later ones take as
    many as fit FEATURE_BATCH_BYTES (at most FEATURE_BATCH), so memory stays flat however large
    the expert's maps are.
    """
    step = 1
    for images in batches(data.images, FEATURE_BATCH):  # (B, 3, H, W) uint8
        done = 0
        while done < len(images):
            part = tokens.features(images[done:done + step].to(device))  # each (b, T, C)
            yield [Features(f.tokens.cpu(), f.grid) for f in part]
            done += int(part[0].tokens.shape[0])
            sample = sum(f.tokens[0].numel() * f.tokens.element_size() for f in part)
            step = max(1, min(FEATURE_BATCH, FEATURE_BATCH_BYTES // max(1, sample)))


def expert_features(vlm: VLM, data: QADataset, cache: FeatureCache, device: torch.device
                    ) -> FeatureBatches:
    """The frozen experts' pooled layer features for the whole split, through the cache (written
    to it batch by batch as they are computed)."""
    out = {name: cached_layers(vlm.experts[name], data, cache, device)
           for name in vlm.expert_names if name not in vlm.live}
    return FeatureBatches(out, data, bool(vlm.live))


def feature_key(tokens: ExpertTokens, data: QADataset | ChatDataset) -> str:
    """The feature cache's key of one expert's pooled layers over a split."""
    expert = tokens.expert
    reduction = tokens.reduction  # a `reduce` mapping as its name form: equal designs share entries
    return cache_key(expert.identity, expert.image_size, expert.layers, reduction.tokens,
                     data.fingerprint(), str(expert.model.dtype).removeprefix("torch."),
                     reduction.merge_grid, reduction.reduce,
                     tokens.tiling.key() if tokens.tiling is not None else None)


def cached_layers(tokens: ExpertTokens, data: QADataset | ChatDataset, cache: FeatureCache,
                  device: torch.device) -> Layers:
    """One frozen expert's pooled layers over the split, each (len(data), T, C_i), through the cache."""
    return cache.get_batches(feature_key(tokens, data),
                             lambda: split_features(tokens, data, device), rows=len(data))
