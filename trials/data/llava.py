"""LLaVA-format data sets: a JSON list of conversation records, images under `data.image_folder`.

The file is read once into a memory-mapped Arrow table (`trials.data.records`). Records of one
image form a group (a text-only record is a group of its own); a seeded shuffle of the groups
gives train_size records to train, then eval_size to eval, so the splits never share an image.
Train keeps every turn of each conversation (`ChatDataset`, text-only records included); eval
asks each record's first human turn (the `<image>` tag removed) and scores the gpt turn after it
(`QADataset`; only records with an image). `skill` or `category` names a record's skill (default
"vqa"); a skill with at most 50 distinct answers in the file is closed (those answers are its
candidates); others are open-ended, scored by `trials.metrics.exact_match` (the official VQA
answer normalisation, then equality).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from search_space import DataConfig
from trials.data.base import BENCHMARKS, DATA_CHECKS, ChatDataset, QADataset
from trials.data.images import RGB8, ImageFiles, decode
from trials.data.records import (
    FORMAT,
    LISTED,
    ArrowTurns,
    DataError,
    Problems,
    column,
    read_records,
    values_at,
)

MAX_CLOSED = 50      # a skill with more distinct answers than this is open-ended
CHECK_SIZE = 16      # side the data check decodes each image at (nothing kept)

__all__ = ["LISTED", "DataError", "can_eval", "check_llava", "load_llava", "split_rows"]


def _paths(cfg: DataConfig) -> tuple[Path, Path]:
    """The JSON file and the image folder (default: the file's folder)."""
    if cfg.path is None:
        raise DataError(f"data.path is not set; benchmark 'llava' needs data.path: a JSON file "
                        f"holding {FORMAT}")
    path = Path(cfg.path).expanduser()
    return path, Path(cfg.image_folder).expanduser() if cfg.image_folder is not None else path.parent


# ---- splits ------------------------------------------------------------------------------------


def group_order(images: pa.ChunkedArray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Record indices with each image's records together (in file order), the groups in a
    seeded random order, and the bounds of each group in it ((G + 1,), from 0 to N).

    Groups are numbered by first appearance in the file, as a dict keyed by image would, and a
    text-only record is a group of its own."""
    encoded = images.combine_chunks().dictionary_encode()  # one code per distinct normalised path
    n = len(encoded)
    codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)   # (N,) text-only: -1
    text_only = encoded.is_null().to_numpy(zero_copy_only=False)
    key = np.where(text_only, len(encoded.dictionary) + np.arange(n), codes)   # (N,)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    number = np.empty(len(first), dtype=np.int64)
    number[np.argsort(first, kind="stable")] = np.arange(len(first))           # by first appearance
    group = number[inverse]                                                    # (N,)
    position = np.empty(len(first), dtype=np.int64)
    position[np.random.default_rng(seed).permutation(len(first))] = np.arange(len(first))
    walk = position[group]                                                     # (N,) group's turn
    order = np.argsort(walk, kind="stable")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(walk[order])) + 1, [n]])
    return order, bounds


@dataclass(frozen=True)
class Split:
    """Row indices of the table chosen for each split, and how many records were skipped."""

    train: np.ndarray
    evaluation: np.ndarray
    skipped: int = 0


def split_rows(images: pa.ChunkedArray, can_eval: np.ndarray, train_size: int, eval_size: int, seed: int,
               usable: Callable[[int], bool] = lambda row: True) -> Split:
    """The groups in seeded order fill train (train_size records), then eval (eval_size records
    that `can_eval`); a group that overfills a split is cut, and the rest of it dropped.
    `usable(row)` is asked once per image group walked; a group it refuses is skipped (its
    records that would have been taken counted)."""
    order, bounds = group_order(images, seed)
    has_image = images.is_valid().to_numpy(zero_copy_only=False)
    sizes, taken = (train_size, eval_size), [0, 0]
    chosen: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    skipped, split = 0, 0
    for start, end in pairwise(bounds.tolist()):
        rows = order[start:end]
        if split == 1:
            rows = rows[can_eval[rows]]
        if not len(rows):
            continue
        room = sizes[split] - taken[split]
        if has_image[rows[0]] and not usable(int(rows[0])):
            skipped += min(len(rows), room)
            continue
        chosen[split].append(rows[:room])
        taken[split] += min(len(rows), room)
        if taken[split] == sizes[split]:
            split += 1
            if split == len(sizes):
                break
    train, evaluation = (np.concatenate(c) if c else np.zeros(0, dtype=np.int64) for c in chosen)
    return Split(train, evaluation, skipped)


# ---- images ------------------------------------------------------------------------------------


def image_problem(file: Path, full: bool) -> tuple[str, str] | None:
    """Why the image file cannot be used: ("missing", the path) or ("unreadable", the path and the
    error), or None. `full`: decoded whole (at a small size, nothing kept), else its header read."""
    try:
        from PIL import Image
    except ImportError as err:  # Pillow is optional for the probe-only install
        raise DataError("loading LLaVA images needs Pillow; install it with `pip install pillow`") from err
    if not file.is_file():
        return "missing", str(file)
    try:
        if full:
            decode(file, CHECK_SIZE)
        else:
            with Image.open(file):
                pass
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for damaged files
        return "unreadable", f"{file}: {err}"
    return None


class ImageCheck:
    """`usable(row)` for split_rows: the row's image opens. A broken one is skipped under
    `skip_missing`, else noted (and the walk goes on, so every problem is named at once)."""

    def __init__(self, table: Any, folder: Path, full: bool, skip: bool) -> None:
        self.images, self.ids = column(table, "image"), column(table, "id")
        self.folder, self.full, self.skip = folder, full, skip
        self.problems = Problems()

    def __call__(self, row: int) -> bool:
        image = self.images[row].as_py()
        problem = image_problem(self.folder / image, self.full)
        if problem is None or self.skip:
            return problem is None
        kind, detail = problem
        self.problems.add(f"image '{image}' of record '{self.ids[row].as_py()}' is {kind} ({detail})")
        return True

    def raise_problems(self) -> None:
        if self.problems:
            raise DataError(f"{self.problems.count} image(s) under data.image_folder '{self.folder}' cannot "
                            f"be used: {self.problems.listed()}; check data.image_folder, fix or remove "
                            "those records, or set data.skip_missing: true to leave them out")


# ---- the splits as data sets -------------------------------------------------------------------


def closed_candidates(table: Any, batch: int = 4096) -> dict[str, list[str]]:
    """Skill -> its sorted distinct first answers (records with an image), for skills with at
    most MAX_CLOSED of them. One pass over the table a batch at a time; at most MAX_CLOSED + 1
    answers are held per skill."""
    found: dict[str, set[str]] = {}
    opened: set[str] = set()
    for part in table.data.table.select(["image", "skill", "answer"]).to_batches(max_chunksize=batch):
        keep = pc.and_(part.column("image").is_valid(), part.column("answer").is_valid())
        part = part.filter(keep)
        for skill, answer in zip(part.column("skill").to_pylist(), part.column("answer").to_pylist(),
                                 strict=True):
            if skill in opened:
                continue
            answers = found.setdefault(skill, set())
            answers.add(answer)
            if len(answers) > MAX_CLOSED:
                opened.add(skill)
                del found[skill]
    return {skill: sorted(answers) for skill, answers in found.items()}


def can_eval(table: Any) -> np.ndarray:
    """(N,) bool: the record has an image and a human turn answered by a gpt turn."""
    valid = pc.and_(column(table, "image").is_valid(), column(table, "answer").is_valid())
    return valid.to_numpy(zero_copy_only=False)


def _files(table: Any, rows: np.ndarray, folder: Path) -> list[Path | None]:
    return [None if p is None else folder / p for p in values_at(column(table, "image"), rows)]


def _texts(table: Any, name: str, rows: np.ndarray) -> list[str]:
    return values_at(column(table, name), rows)


def _load(cfg: DataConfig, full: bool, pad: RGB8 | None = None) -> tuple[ChatDataset, QADataset]:
    """The two splits; their images checked to exist and open (`full`: to decode)."""
    path, folder = _paths(cfg)
    table = read_records(path)
    wanted = cfg.train_size + cfg.eval_size
    if len(table) < wanted:
        raise DataError(f"data.path '{path}' has {len(table)} records, fewer than data.train_size + "
                        f"data.eval_size = {cfg.train_size} + {cfg.eval_size} = {wanted}; lower them "
                        f"or use a larger file")
    check = ImageCheck(table, folder, full, cfg.skip_missing)
    split = split_rows(column(table, "image"), can_eval(table), cfg.train_size, cfg.eval_size, cfg.seed,
                       check)
    check.raise_problems()
    if len(split.evaluation) < cfg.eval_size:
        skipped = f", {split.skipped} skipped for their images" if split.skipped else ""
        raise DataError(f"only {len(split.evaluation)} records of '{path}' with an image and a question "
                        f"have images unused by the {len(split.train)} train records (records share "
                        f"images{skipped}), fewer than data.eval_size = {cfg.eval_size}; lower "
                        "data.train_size or data.eval_size")
    train_files = _files(table, split.train, folder)
    train = ChatDataset(f"{path.stem}/train", ImageFiles(train_files, cfg.image_size, pad),
                        ArrowTurns(table, split.train), [f is not None for f in train_files],
                        skipped=split.skipped)
    rows = split.evaluation
    evaluation = QADataset(f"{path.stem}/eval", ImageFiles(_files(table, rows, folder), cfg.image_size, pad),
                           _texts(table, "question", rows), _texts(table, "answer", rows),
                           _texts(table, "skill", rows), closed_candidates(table))
    return train, evaluation


@BENCHMARKS.decorator("llava", "a LLaVA conversation JSON (data.path) with images in data.image_folder")
def load_llava(cfg: DataConfig, pad: RGB8 | None = None) -> tuple[ChatDataset, QADataset]:
    """Train: every turn of train_size records (text-only ones too); eval: eval_size records'
    first QA pair. `pad`: images padded square with that colour first (data.pad_to_square).
    Under data.skip_missing, `train.skipped` counts the records of both splits left out."""
    return _load(cfg, full=False, pad=pad)


@DATA_CHECKS.decorator("llava", "the file parses, has enough records, and every chosen image opens")
def check_llava(cfg: DataConfig) -> None:
    """What a trial would load, every image decoded once (at a small size, none kept): raises
    DataError naming each problem."""
    _load(cfg, full=True)
