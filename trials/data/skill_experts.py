"""Tiny vision experts with known, different skills on the probe (issue 17): the planted benchmark.

    python -m trials.data.skill_experts --out examples/experts      # ~4 CPU-minutes, deterministic

Each expert is a real `CLIPVisionModel` (the `tiny-clip` preset's width and depth) trained from
its own seed, on probe-style images drawn from its own data seed (not the search's), through a
linear head on its mean-pooled patch tokens that is thrown away:

- `colour` sees colour: 16 px input, a 2x2 grid (4 tokens);
- `shape` sees shape: 32 px, 4x4 (16 tokens);
- `reader` reads the small digits: 64 px, 8x8 (64 tokens; one digit per 8 px patch).

Besides its own skill each is trained blind to the others': pairs of images that differ only in
what it must not see (an object's shape for `colour`; its colour for `shape`; an object or a
digit being there at all) are pulled to the same tokens at every layer. So in a probe restricted
to color, shape and small_text the best subset is all three (examples/planted.yaml). The head
reads mean-pooled tokens, so the reader's digit survives channel_concat's pooling of its 8x8 grid
(measured: docs/BENCHMARKS.md), and its tokens do not say where a digit is: asked for the left or
the right one of two digits side by side, it stayed at 0.46-0.47 under sequence_concat even at
1200 steps (tried 2026-12-04, not kept). Planting "pooling loses the reader" needs a reader
trained per token.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from trials.data.probe import COLORS, INK, SHAPES, digit_half, digit_side, digit_slots, draw_shape
from trials.vlm.families import CLIP_MEAN, CLIP_STD
from trials.vlm.processing import Processing

DATA_SEED = 1717        # the experts' own images (the search's probe uses data.seed, 0 by default)
PROBE_SIZE = 64         # the probe's image side trained on (planted.yaml, quickstart.yaml)
WIDTH = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4}
Sample = tuple[np.ndarray, int]                      # uint8 (S, S, 3) image and its label
Pair = tuple[np.ndarray, np.ndarray]                 # two images that differ in a nuisance only


@dataclass(frozen=True)
class ExpertSpec:
    """One expert: the probe skill it is trained on, its input side and patch, what it is blind to."""

    skill: str
    side: int
    patch: int
    blind_to: tuple[str, ...]
    seed: int
    steps: int = 300
    lr: float = 2e-3


SPECS: dict[str, ExpertSpec] = {
    "colour": ExpertSpec("color", 16, 8, ("shape", "digit"), 11),
    "shape": ExpertSpec("shape", 32, 8, ("color", "digit"), 12),
    "reader": ExpertSpec("small_text", 64, 8, ("object",), 13, steps=500, lr=3e-3),
}


# ---- images ----------------------------------------------------------------------------------


def _canvas(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The probe's light-grey tinted background (int16 (S, S, 3)) and its pixel noise (S, S, 1)."""
    grey, tint = int(rng.integers(150, 201)), rng.integers(-8, 9, size=3)
    background = np.broadcast_to(grey + tint, (size, size, 3)).astype(np.int16)
    return background, rng.integers(-3, 4, size=(size, size, 1), dtype=np.int16)


def _done(img: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _object(rng: np.random.Generator, size: int) -> tuple[str, str, float, float, float]:
    """Shape, colour and (cy, cx, r) of an object as the probe draws one: half of them small and
    anywhere (colour questions), half large at the centre (shape questions)."""
    shape, colour = (names[int(rng.integers(len(names)))] for names in (list(SHAPES), list(COLORS)))
    if rng.random() < 0.5:
        r = size * float(rng.uniform(0.10, 0.15))
        cy, cx = (float(rng.uniform(r + 1, size - 2 - r)) for _ in range(2))
    else:
        r = size * float(rng.uniform(0.27, 0.30))
        cy, cx = (size / 2 + size * float(rng.uniform(-0.02, 0.02)) for _ in range(2))
    return shape, colour, cy, cx, r


def _digit(img: np.ndarray, rng: np.random.Generator, digits: tuple[np.ndarray, np.ndarray]) -> int:
    """Blend a handwritten digit into one of the probe's four central slots; its label."""
    images, labels = digits
    i, slot = int(rng.integers(len(images))), int(rng.integers(4))
    side = digit_side(img.shape[0])
    y0, x0 = digit_slots(img.shape[0])[slot]
    nearest = np.arange(side) * images.shape[1] // side
    ink = images[i][np.ix_(nearest, nearest)][..., None]  # (side, side, 1) in [0, 1]
    cell = img[y0:y0 + side, x0:x0 + side]
    cell[...] = np.rint(cell * (1 - ink) + INK * ink)
    return int(labels[i])


def _color_sample(rng: np.random.Generator, size: int) -> Sample:
    """A small object anywhere (a colour question); its colour."""
    img, noise = _canvas(rng, size)
    shape, colour = list(SHAPES)[int(rng.integers(len(SHAPES)))], list(COLORS)[int(rng.integers(len(COLORS)))]
    r = size * float(rng.uniform(0.10, 0.15))
    cy, cx = (float(rng.uniform(r + 1, size - 2 - r)) for _ in range(2))
    draw_shape(img, shape, colour, cy, cx, r)
    return _done(img, noise), list(COLORS).index(colour)


def _shape_sample(rng: np.random.Generator, size: int) -> Sample:
    """A large object at the centre, 2% jitter (a shape question); its shape."""
    img, noise = _canvas(rng, size)
    shape, colour = list(SHAPES)[int(rng.integers(len(SHAPES)))], list(COLORS)[int(rng.integers(len(COLORS)))]
    r = size * float(rng.uniform(0.27, 0.30))
    cy, cx = (size / 2 + size * float(rng.uniform(-0.02, 0.02)) for _ in range(2))
    draw_shape(img, shape, colour, cy, cx, r)
    return _done(img, noise), list(SHAPES).index(shape)


def _digit_sample(rng: np.random.Generator, size: int) -> Sample:
    """A digit in one of the central slots (a small_text question); the digit."""
    img, noise = _canvas(rng, size)
    label = _digit(img, rng, digit_half("train"))
    return _done(img, noise), label


SKILL_SAMPLES: dict[str, tuple[Callable[[np.random.Generator, int], Sample], int]] = {
    "color": (_color_sample, len(COLORS)), "shape": (_shape_sample, len(SHAPES)),
    "small_text": (_digit_sample, 10),
}  # skill -> (drawer, classes)


def _other(rng: np.random.Generator, names: list[str], than: str) -> str:
    rest = [n for n in names if n != than]
    return rest[int(rng.integers(len(rest)))]


def _shape_pair(rng: np.random.Generator, size: int) -> Pair:
    """One object, and the same object (colour, place, size) as another shape."""
    img, noise = _canvas(rng, size)
    shape, colour, cy, cx, r = _object(rng, size)
    twin = img.copy()
    draw_shape(img, shape, colour, cy, cx, r)
    draw_shape(twin, _other(rng, list(SHAPES), shape), colour, cy, cx, r)
    return _done(img, noise), _done(twin, noise)


def _color_pair(rng: np.random.Generator, size: int) -> Pair:
    """One object, and the same object in another colour."""
    img, noise = _canvas(rng, size)
    shape, colour, cy, cx, r = _object(rng, size)
    twin = img.copy()
    draw_shape(img, shape, colour, cy, cx, r)
    draw_shape(twin, shape, _other(rng, list(COLORS), colour), cy, cx, r)
    return _done(img, noise), _done(twin, noise)


def _digit_pair(rng: np.random.Generator, size: int) -> Pair:
    """A digit, and the same background without it."""
    img, noise = _canvas(rng, size)
    blank = img.copy()
    _digit(img, rng, digit_half("train"))
    return _done(img, noise), _done(blank, noise)


def _object_pair(rng: np.random.Generator, size: int) -> Pair:
    """One to three objects, and the same background without them."""
    img, noise = _canvas(rng, size)
    blank = img.copy()
    for _ in range(int(rng.integers(1, 4))):
        shape, colour, cy, cx, r = _object(rng, size)
        draw_shape(img, shape, colour, cy, cx, r)
    return _done(img, noise), _done(blank, noise)


PAIRS: dict[str, Callable[[np.random.Generator, int], Pair]] = {
    "shape": _shape_pair, "color": _color_pair, "digit": _digit_pair, "object": _object_pair,
}


def _tensor(images: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy())  # uint8 (B, 3, S, S)


# ---- training --------------------------------------------------------------------------------


def build(spec: ExpertSpec) -> CLIPVisionModel:
    """The expert's architecture with its seeded initial weights."""
    config = CLIPVisionConfig(**WIDTH, image_size=spec.side, patch_size=spec.patch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return CLIPVisionModel(config).eval()


def hidden_tokens(model: CLIPVisionModel, images: Tensor, side: int) -> list[Tensor]:
    """Patch tokens (B, N, C) of blocks 1..L for uint8 images, prepared as `Expert` prepares them."""
    x = Processing(CLIP_MEAN, CLIP_STD).view(images.float() / 255.0, side)
    x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    out = model(pixel_values=x, output_hidden_states=True, interpolate_pos_encoding=True)
    return [state[:, 1:] for state in out.hidden_states[1:]]  # CLS dropped, as the experts read


def _step_loss(model: CLIPVisionModel, head: nn.Linear, spec: ExpertSpec, rng: np.random.Generator,
               size: int, batch: int) -> Tensor:
    """Cross-entropy on the skill + blindness: pairs' tokens apart, relative to the skill's spread."""
    draw = SKILL_SAMPLES[spec.skill][0]
    images, labels = zip(*(draw(rng, size) for _ in range(batch)), strict=True)
    states = hidden_tokens(model, _tensor(list(images)), spec.side)
    loss = F.cross_entropy(head(states[-1].mean(1)), torch.tensor(labels))
    pairs = [PAIRS[spec.blind_to[i % len(spec.blind_to)]](rng, size) for i in range(batch // 2)]
    a, b = (hidden_tokens(model, _tensor(list(side)), spec.side) for side in zip(*pairs, strict=True))
    for skill_state, sa, sb in zip(states, a, b, strict=True):
        spread = skill_state.var(dim=(0, 1)).mean() + 1e-6
        loss = loss + (sa - sb).pow(2).mean() / (2 * spread) / len(states)
    return loss


def train(spec: ExpertSpec, steps: int | None = None, batch: int = 48) -> CLIPVisionModel:
    """The expert after `steps` (default: its spec's) AdamW steps; same spec and steps, same
    thread count: bit-identical weights."""
    steps, lr = steps or spec.steps, spec.lr
    model = build(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        head = nn.Linear(WIDTH["hidden_size"], SKILL_SAMPLES[spec.skill][1])
    rng = np.random.default_rng([DATA_SEED, spec.seed])
    params = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then cosine to zero
        optimizer, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / steps))))
    model.train()
    for _ in range(steps):
        loss = _step_loss(model, head, spec, rng, PROBE_SIZE, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def save(model: CLIPVisionModel, spec: ExpertSpec, folder: Path) -> None:
    """config.json, model.safetensors, preprocessor_config.json and how it was trained."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": spec.side}, crop_size={"height": spec.side, "width": spec.side},
                       image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)).save_pretrained(folder)
    card = {**asdict(spec), "data_seed": DATA_SEED, "probe_size": PROBE_SIZE,
            "command": "python -m trials.data.skill_experts --out examples/experts"}
    (folder / "training.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")


MEASURED = ("color", "shape", "small_text")


def skill_scores(source: str, image_size: int = 64, seed: int = 5, n: int = 900) -> dict[str, float]:
    """Linear-probe accuracy per skill (LogisticRegression on the expert's mean-pooled last-layer
    tokens, read through `Expert` as a trial reads them) on a probe of `MEASURED` skills."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from search_space import DataConfig, ExpertConfig
    from trials.data.probe import probe_splits
    from trials.vlm.experts import Expert

    expert = Expert(ExpertConfig(source=source))
    splits = probe_splits(DataConfig(train_size=n, eval_size=n, image_size=image_size, seed=seed,
                                     skills=MEASURED))
    with torch.no_grad():
        pooled = [expert(split.dataset.images)[-1].tokens.mean(1).numpy() for split in splits]
    out = {}
    for skill in MEASURED:
        rows = [np.array([s == skill for s in split.dataset.skills]) for split in splits]
        answers = [np.array(split.dataset.answers)[r] for split, r in zip(splits, rows, strict=True)]
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0))
        probe.fit(pooled[0][rows[0]], answers[0])
        out[skill] = float(probe.score(pooled[1][rows[1]], answers[1]))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("examples/experts"))
    parser.add_argument("--only", nargs="*", choices=sorted(SPECS), default=sorted(SPECS))
    parser.add_argument("--measure", action="store_true", help="only print the saved experts' skills")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the same weights on any machine (a matmul's sums follow its threads)
    torch.use_deterministic_algorithms(True)
    for name in args.only if args.measure else ():
        scores = skill_scores(str(args.out / name))
        print(name, " ".join(f"{skill} {value:.3f}" for skill, value in scores.items()))
    for name in () if args.measure else args.only:
        start = time.perf_counter()
        spec = SPECS[name]
        save(train(spec), spec, args.out / name)
        print(f"{name}: {spec.steps} steps in {time.perf_counter() - start:.0f} s -> {args.out / name}")


if __name__ == "__main__":
    main()
