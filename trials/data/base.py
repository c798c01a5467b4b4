"""What a benchmark gives a trial: image question-answer pairs with skills, and a registry.

A loader takes the point's `data:` section (and a pad colour) and returns the (train, eval)
splits, which never share an image: train a `ChatDataset` (whole conversations), eval a
`QADataset`. Closed-vocabulary skills list their candidate answers (scored by the VLM);
a skill with no candidates is open-ended (generated, then exact-match scored). Images are a
uint8 tensor or `ImageFiles` (decoded on demand, see `trials.data.images`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from search_space import DataConfig, EvalSpec, Registry
from trials.data.images import RGB8, Images, take, update_digest


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


Role = str   # "human" | "gpt" | "system" (LLaVA's names)
Turn = tuple[Role, str]


class TurnSource(Protocol):
    """Records' conversations, read one at a time (an Arrow table memory-mapped, or a list)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Turn, ...]: ...


@dataclass(frozen=True)
class ChatDataset:
    """N training records: every turn of each conversation, and its image when it has one.

    `turns[i]` are record i's turns as the file has them (`<image>` wherever the record puts it;
    a record with an image but no tag gets one before its first human turn when encoded).
    `images[i]` is uint8 (3, S, S); a text-only record's row is blank and never reaches the LM
    (`has_image[i]` is False). `skipped`: records left out by `data.skip_missing`.
    """

    name: str
    images: Images                         # (N, 3, S, S) uint8
    turns: TurnSource                      # N conversations
    has_image: Sequence[bool]              # (N,)
    skipped: int = 0

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.turns) == len(self.has_image):
            raise ValueError("images, turns and has_image differ in length")

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        """Content hash of the images (what the feature cache keys on): see QADataset."""
        if "_fingerprint" not in self.__dict__:
            digest = hashlib.sha256()
            update_digest(self.images, digest)
            self.__dict__["_fingerprint"] = digest.hexdigest()[:24]
        return self.__dict__["_fingerprint"]

    @staticmethod
    def from_qa(data: QADataset) -> ChatDataset:
        """One human question and one gpt answer per sample, every sample with its image."""
        turns = [(("human", q), ("gpt", a)) for q, a in zip(data.questions, data.answers, strict=True)]
        return ChatDataset(data.name, data.images, turns, [True] * len(data))


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set read from its released files, ready to ask and to score.

    `qa.questions` are the prompts as the human turn says them (question, options, the format's
    suffix; no `<image>` tag); `qa.answers` the first reference (for display); `choices[i]` the
    candidate answers when the set is answered by likelihood (option letters, yes/no), else None.
    `score(predictions)` gives the set's metrics, unprefixed (`{"accuracy": ..}`), as the
    benchmark's official code computes them.
    """

    spec: EvalSpec
    qa: QADataset
    choices: list[tuple[str, ...]] | None
    score: Callable[[list[str]], dict[str, float]]

    @property
    def label(self) -> str:
        return self.spec.label


class Loader(Protocol):
    """A benchmark: the point's `data:` section (and the pad colour when images are padded square)
    -> (train, eval)."""

    def __call__(self, cfg: DataConfig, pad: RGB8 | None = None) -> tuple[ChatDataset, QADataset]: ...


BENCHMARKS: Registry[Loader] = Registry("benchmark")


def load_benchmark(cfg: DataConfig, pad: RGB8 | None = None) -> tuple[ChatDataset, QADataset]:
    """The (train, eval) splits of the point's benchmark; `pad`: the colour images are padded
    square with before resizing (None: stretched; the trainer computes it for data.pad_to_square)."""
    return BENCHMARKS.get(cfg.benchmark)(cfg, pad=pad)


# Benchmarks read from files the user supplies register a check here: run once before a search or
# a trial, it raises ValueError naming what is wrong, so a broken data set is bad input (exit 2)
# rather than every trial failing on it. A generated benchmark (the probe) needs none.
DATA_CHECKS: Registry[Callable[[DataConfig], None]] = Registry("data check")


def check_data(cfg: DataConfig) -> None:
    if cfg.benchmark in DATA_CHECKS:
        DATA_CHECKS.get(cfg.benchmark)(cfg)


# Evaluation sets: one loader per released format (keyed as search_space.eval_formats names them),
# given the spec and the decode side (data.image_size) and pad colour (None: no padding).
EvalLoader = Callable[[EvalSpec, int, RGB8 | None], EvalSet]
EVAL_LOADERS: Registry[EvalLoader] = Registry("eval format loader")
