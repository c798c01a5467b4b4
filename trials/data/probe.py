"""The built-in probe benchmark: drawn image QA over six skills, deterministic from `data.seed`.

Each skill needs a different kind of vision, so different experts, fusions and position schemes
win on different skills: color (any expert), shape and count (spatial detail), position and
relation (where things are), small_text (a real handwritten digit from scikit-learn's bundled
8x8 digits, 1/12 of the image side: readable by an expert that sees the image at 96 px, not by
one that sees it at 24 px). The digit sits in one of four fixed slots, the cells of a
digit-sized grid around the image centre (one patch of an 8 px-patch ViT at 96 px), so a short
budget can learn to read it at high resolution; anywhere in the image, it stayed at chance
even for an expert that saw it whole. Train and eval come from separate RNG streams, use
disjoint halves of the digits and never share an image.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from search_space import PROBE_SKILLS, DataConfig
from trials.data.base import BENCHMARKS, ChatDataset, QADataset
from trials.data.images import RGB8

Box = tuple[int, int, int, int]  # y0, x0, y1, x1 (ends exclusive), pixels
Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (v (h, 1), u (1, w)) offsets / radius -> bool

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220),
    "yellow": (240, 220, 20), "purple": (140, 40, 180), "black": (20, 20, 20),
}
SHAPES: dict[str, Mask] = {  # each inside the square |u|, |v| <= 1 around the centre
    "circle": lambda v, u: u * u + v * v <= 1.0,
    "square": lambda v, u: np.maximum(abs(u), abs(v)) <= 0.8,
    "triangle": lambda v, u: (v >= -0.9) & (v <= 0.8) & (abs(u) <= 0.95 * (v + 0.9) / 1.7),
    "cross": lambda v, u: ((abs(u) <= 0.3) & (abs(v) <= 0.95)) | ((abs(v) <= 0.3) & (abs(u) <= 0.95)),
    "diamond": lambda v, u: abs(u) + abs(v) <= 1.0,
    "ring": lambda v, u: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.3),
}
DIGITS = tuple(str(d) for d in range(10))
COUNTS = ("1", "2", "3", "4", "5")
POSITION_QUESTIONS = (("is the object on the left or the right ?", ("left", "right")),
                      ("is the object at the top or the bottom ?", ("top", "bottom")))
RELATION_QUESTIONS = ("which color is more to the left ?", "which color is higher ?")
CANDIDATES: dict[str, list[str]] = {
    "color": list(COLORS), "shape": list(SHAPES), "count": list(COUNTS),
    "position": [a for _, pair in POSITION_QUESTIONS for a in pair], "relation": list(COLORS),
    "small_text": list(DIGITS),
}
INK = np.array([15, 15, 40], dtype=np.float32)  # the digits' ink: dark, on the light background


def digit_side(image_size: int) -> int:
    """A digit's side in pixels: 1/12 of the image (8 px at 96 px), never under its native 8.

    So an expert whose input side is 24 px sees it 2 px wide (unreadable) and one at 96 px sees
    all 8x8 of its pixels, whatever the probe's image size (from 96 px up).
    """
    return max(8, round(image_size / 12))


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, nothing downloaded

    bunch = load_digits()
    images, labels = (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)  # (M, 8, 8)
    images.flags.writeable = labels.flags.writeable = False  # shared by every call
    return images, labels


def digit_half(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The train or eval half of the digits: ink in [0, 1] (M, 8, 8) and labels (M,)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    images, labels = _digits()
    half = (len(images) + 1) // 2
    part = slice(0, half) if split == "train" else slice(half, None)
    return images[part], labels[part]


@dataclass(frozen=True)
class _Pen:
    """What a skill's drawer needs: the split's RNG stream, the image side and its digits."""

    rng: np.random.Generator
    size: int
    digits: tuple[np.ndarray, np.ndarray]

    def pick(self, names: Sequence[str]) -> str:
        return names[int(self.rng.integers(len(names)))]

    def radius(self, low: float, high: float) -> float:
        return self.size * float(self.rng.uniform(low, high))

    def coord(self, r: float) -> float:
        """A centre coordinate that keeps an object of radius `r` inside the image."""
        return float(self.rng.uniform(r + 1, self.size - 2 - r))


def draw_shape(img: np.ndarray, shape: str, color: str, cy: float, cx: float, r: float) -> Box:
    """Paint `shape` of radius `r` centred at (cy, cx) onto img (S, S, 3); its square box."""
    size = img.shape[0]
    y0, x0 = max(0, math.floor(cy - r)), max(0, math.floor(cx - r))
    y1, x1 = min(size, math.ceil(cy + r) + 1), min(size, math.ceil(cx + r) + 1)
    v = (np.arange(y0, y1, dtype=np.float32)[:, None] - cy) / r  # (h, 1)
    u = (np.arange(x0, x1, dtype=np.float32)[None, :] - cx) / r  # (1, w)
    img[y0:y1, x0:x1][SHAPES[shape](v, u)] = COLORS[color]
    return y0, x0, y1, x1


def _single(pen: _Pen, img: np.ndarray, shape: str, color: str) -> list[Box]:
    r = pen.radius(0.10, 0.15)
    return [draw_shape(img, shape, color, pen.coord(r), pen.coord(r), r)]


def _color(pen: _Pen, img: np.ndarray) -> tuple[str, str, list[Box]]:
    color = pen.pick(list(COLORS))
    return "what color is the object ?", color, _single(pen, img, pen.pick(list(SHAPES)), color)


def _shape(pen: _Pen, img: np.ndarray) -> tuple[str, str, list[Box]]:
    """A large object at the centre (2% jitter): its outline needs spatial detail (fine token
    grids) rather than a search over the image, which a short budget cannot learn from scratch."""
    shape = pen.pick(list(SHAPES))
    r = pen.radius(0.27, 0.30)
    cy, cx = (pen.size / 2 + pen.size * float(pen.rng.uniform(-0.02, 0.02)) for _ in range(2))
    box = draw_shape(img, shape, pen.pick(list(COLORS)), cy, cx, r)
    return "what shape is the object ?", shape, [box]


def _count(pen: _Pen, img: np.ndarray) -> tuple[str, str, list[Box]]:
    """1..5 objects whose square boxes keep a gap (rejection sampling of the centres)."""
    n, gap, placed = int(pen.rng.integers(1, 6)), 0.04 * pen.size, []
    boxes = []
    while len(placed) < n:
        r = pen.radius(0.06, 0.09)
        cy, cx = pen.coord(r), pen.coord(r)
        if all(max(abs(cy - y), abs(cx - x)) >= r + q + gap for y, x, q in placed):
            placed.append((cy, cx, r))
            boxes.append(draw_shape(img, pen.pick(list(SHAPES)), pen.pick(list(COLORS)), cy, cx, r))
    return "how many objects are there ?", str(n), boxes


def _position(pen: _Pen, img: np.ndarray) -> tuple[str, str, list[Box]]:
    """One object wholly inside one half, at least 6% of the side away from the middle."""
    axis, side = int(pen.rng.integers(2)), int(pen.rng.integers(2))
    question, answers = POSITION_QUESTIONS[axis]
    r = pen.radius(0.10, 0.14)
    near = float(pen.rng.uniform(r + 1, pen.size / 2 - r - 0.06 * pen.size))
    along = near if side == 0 else pen.size - 1 - near
    other = pen.coord(r)
    cy, cx = (other, along) if axis == 0 else (along, other)
    return question, answers[side], [draw_shape(img, pen.pick(list(SHAPES)), pen.pick(list(COLORS)),
                                                cy, cx, r)]


def _relation(pen: _Pen, img: np.ndarray) -> tuple[str, str, list[Box]]:
    """Two objects of different colours, apart by 12% of the side plus their radii along the axis."""
    axis = int(pen.rng.integers(2))  # 0: which is more to the left, 1: which is higher
    first, second = (list(COLORS)[int(i)] for i in pen.rng.choice(len(COLORS), 2, replace=False))
    ra, rb = pen.radius(0.08, 0.12), pen.radius(0.08, 0.12)
    r = max(ra, rb)
    low, high, sep = r + 1, pen.size - 2 - r, 2 * r + 0.12 * pen.size
    a = float(pen.rng.uniform(low, high - sep))
    b = float(pen.rng.uniform(a + sep, high))
    boxes = []
    for color, along, radius in ((first, a, ra), (second, b, rb)):
        other = pen.coord(radius)
        cy, cx = (other, along) if axis == 0 else (along, other)
        boxes.append(draw_shape(img, pen.pick(list(SHAPES)), color, cy, cx, radius))
    return RELATION_QUESTIONS[axis], first, boxes


def digit_slots(image_size: int) -> tuple[tuple[int, int], ...]:
    """Where a digit may sit: (y0, x0) of the 2x2 digit-sized cells around the image centre.

    The cells lie on the grid of `digit_side` squares, so at 96 px each is one patch of an
    8 px-patch ViT; a reader looks in four places, not anywhere (which no short budget learns).
    """
    side = digit_side(image_size)
    centre = image_size // 2 // side * side  # the grid line at or above/left of the centre
    return tuple((y, x) for y in (centre - side, centre) for x in (centre - side, centre))


def _small_text(pen: _Pen, img: np.ndarray) -> tuple[str, str, list[Box]]:
    """A real handwritten digit, `digit_side` px wide, in one of the `digit_slots`; its ink
    blended onto the background."""
    images, labels = pen.digits
    i = int(pen.rng.integers(len(images)))
    side = digit_side(pen.size)
    row, col = (int(pen.rng.integers(2)) for _ in range(2))  # as many draws as a free spot took
    y0, x0 = digit_slots(pen.size)[2 * row + col]
    nearest = np.arange(side) * images.shape[1] // side  # digit row/column of each drawn one
    ink = images[i][np.ix_(nearest, nearest)][..., None]  # (side, side, 1) in [0, 1]
    cell = img[y0:y0 + side, x0:x0 + side]
    cell[...] = np.rint(cell * (1 - ink) + INK * ink)
    return "what digit is written ?", str(labels[i]), [(y0, x0, y0 + side, x0 + side)]


DRAWERS: dict[str, Callable[[_Pen, np.ndarray], tuple[str, str, list[Box]]]] = {
    "color": _color, "shape": _shape, "count": _count, "position": _position,
    "relation": _relation, "small_text": _small_text,
}
assert tuple(DRAWERS) == PROBE_SKILLS == tuple(CANDIDATES), "the probe's skills drifted"


def _background(pen: _Pen) -> np.ndarray:
    """A plain light-grey image with a slight per-image tint: int16 (S, S, 3)."""
    grey = int(pen.rng.integers(150, 201))
    tint = pen.rng.integers(-8, 9, size=3)
    return np.broadcast_to(grey + tint, (pen.size, pen.size, 3)).astype(np.int16)


@dataclass(frozen=True)
class ProbeSplit:
    """One split and where its items were drawn (answer-bearing item first), for checks."""

    dataset: QADataset
    boxes: list[list[Box]]  # per sample: (y0, x0, y1, x1) of each object or digit cell


def _draw_split(name: str, n: int, pen: _Pen, avoid: set[bytes], asked: tuple[str, ...] = PROBE_SKILLS
                ) -> tuple[ProbeSplit, set[bytes]]:
    """n samples, the `asked` skills in equal shares in a shuffled order; no image hashes to one in
    `avoid`."""
    skills = [asked[int(i) % len(asked)] for i in pen.rng.permutation(n)]
    images = np.empty((n, pen.size, pen.size, 3), dtype=np.uint8)
    questions, answers, boxes, seen = [], [], [], set()
    for i, skill in enumerate(skills):
        while True:  # re-draw the (vanishingly rare) image identical to one already drawn
            img = _background(pen)
            question, answer, drawn = DRAWERS[skill](pen, img)
            img += pen.rng.integers(-3, 4, size=(pen.size, pen.size, 1), dtype=np.int16)  # noise
            images[i] = np.clip(img, 0, 255)
            digest = hashlib.sha1(images[i].tobytes()).digest()
            if digest not in avoid and digest not in seen:
                break
        seen.add(digest)
        questions.append(question)
        answers.append(answer)
        boxes.append(drawn)
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # (N, 3, S, S)
    data = QADataset(name, tensor, questions, answers, skills, {k: list(CANDIDATES[k]) for k in asked})
    return ProbeSplit(data, boxes), seen


def probe_splits(cfg: DataConfig) -> tuple[ProbeSplit, ProbeSplit]:
    """The (train, eval) probe splits with their layouts; same config, byte-identical splits."""
    train_rng, eval_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(2))
    train, seen = _draw_split("probe/train", cfg.train_size,
                              _Pen(train_rng, cfg.image_size, digit_half("train")), set(), cfg.skills)
    evaluation, _ = _draw_split("probe/eval", cfg.eval_size,
                                _Pen(eval_rng, cfg.image_size, digit_half("eval")), seen, cfg.skills)
    return train, evaluation


@BENCHMARKS.decorator("probe", "drawn image QA over six skills (color ... small_text), seeded")
def load_probe(cfg: DataConfig, pad: RGB8 | None = None) -> tuple[ChatDataset, QADataset]:
    """Train as one human question and one gpt answer per image; `pad` is unused (drawn images
    are square)."""
    train, evaluation = probe_splits(cfg)
    return ChatDataset.from_qa(train.dataset), evaluation.dataset
