"""What a benchmark gives a trial: image question-answer pairs with skills, and a registry.

A loader takes the point's `data:` section and returns the (train, eval) splits, which never
share an image. Closed-vocabulary skills list their candidate answers (scored by the VLM);
a skill with no candidates is open-ended (generated, then exact-match scored). Images are a
uint8 tensor or `ImageFiles` (decoded on demand, see `trials.data.images`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from search_space.point import DataConfig
from search_space.registry import Registry
from trials.data.images import Images, take, update_digest


@dataclass(frozen=True)
class QADataset:
    """N image-question-answer triples; `images` is uint8 (N, 3, H, W), in memory or decoded
    from files when indexed."""

    name: str
    images: Images                         # (N, 3, H, W) uint8
    questions: list[str]
    answers: list[str]
    skills: list[str]
    candidates: dict[str, list[str]] = field(default_factory=dict)  # skill -> closed answers

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if not len(self.questions) == len(self.answers) == len(self.skills) == n:
            raise ValueError("images, questions, answers and skills differ in length")

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        """Content hash: equal data sets share cached expert features, whatever their name.
        Image bytes are hashed a chunk (or a file) at a time; computed once per data set."""
        if "_fingerprint" not in self.__dict__:
            digest = hashlib.sha256()
            update_digest(self.images, digest)
            for text in (*self.questions, *self.answers, *self.skills):
                digest.update(text.encode() + b"\0")
            self.__dict__["_fingerprint"] = digest.hexdigest()[:24]  # frozen: set once, by hand
        return self.__dict__["_fingerprint"]

    def subset(self, indices: Sequence[int]) -> QADataset:
        idx = list(indices)
        return QADataset(self.name, take(self.images, idx), [self.questions[i] for i in idx],
                         [self.answers[i] for i in idx], [self.skills[i] for i in idx],
                         dict(self.candidates))


Loader = Callable[[DataConfig], tuple[QADataset, QADataset]]
BENCHMARKS: Registry[Loader] = Registry("benchmark")


def load_benchmark(cfg: DataConfig) -> tuple[QADataset, QADataset]:
    """The (train, eval) splits of the point's benchmark."""
    return BENCHMARKS.get(cfg.benchmark)(cfg)


# Benchmarks read from files the user supplies register a check here: run once before a search or
# a trial, it raises ValueError naming what is wrong, so a broken data set is bad input (exit 2)
# rather than every trial failing on it. A generated benchmark (the probe) needs none.
DATA_CHECKS: Registry[Callable[[DataConfig], None]] = Registry("data check")


def check_data(cfg: DataConfig) -> None:
    if cfg.benchmark in DATA_CHECKS:
        DATA_CHECKS.get(cfg.benchmark)(cfg)
