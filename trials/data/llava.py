"""LLaVA-format data sets: a JSON list of conversation records, images under `data.image_folder`.

A record gives one QA pair: its first human turn (the `<image>` tag removed) and the gpt turn
after it. `skill` or `category` names its skill (default "vqa"). A skill with at most 50
distinct answers in the file is closed (those answers are its candidates); others are
open-ended, scored by `exact_match` on VQA-normalised answers.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from search_space.point import DataConfig
from trials.data.base import BENCHMARKS, DATA_CHECKS, QADataset
from trials.data.images import ImageFiles, decode

MAX_CLOSED = 50      # a skill with more distinct answers than this is open-ended
DEFAULT_SKILL = "vqa"
IMAGE_TAG = "<image>"
LISTED = 10          # problems spelled out in one error; the rest are counted

FORMAT = ("a JSON list of {'id', 'image': 'path/under/image_folder.jpg', 'conversations': "
          "[{'from': 'human', 'value': '<image>\\nquestion'}, {'from': 'gpt', 'value': 'answer'}]}")


class DataError(ValueError):
    """A data set that cannot be loaded; the message names the problem and the fix."""


@dataclass(frozen=True)
class Record:
    """One QA pair of the file."""

    id: str
    image: str  # relative to the image folder
    question: str
    answer: str
    skill: str


def _listed(problems: list[str]) -> str:
    more = f"; and {len(problems) - LISTED} more" if len(problems) > LISTED else ""
    return "; ".join(problems[:LISTED]) + more


def _first_pair(turns: list[object]) -> tuple[str, str] | None:
    """The first human turn's text followed directly by a gpt turn's text, or None."""
    for asked, told in pairwise(turns):
        if (isinstance(asked, dict) and isinstance(told, dict) and asked.get("from") == "human"
                and told.get("from") == "gpt" and isinstance(asked.get("value"), str)
                and isinstance(told.get("value"), str)):
            return asked["value"], told["value"]
    return None


def _parse(index: int, item: object) -> Record | str:
    """The record, or what is wrong with it."""
    if not isinstance(item, dict):
        return f"record #{index} is a JSON {type(item).__name__}, not an object"
    rid = str(item.get("id", f"#{index}"))
    missing = [key for key in ("image", "conversations") if key not in item]
    if missing:
        return f"record '{rid}' has no {' and no '.join(repr(k) for k in missing)}"
    image, turns = item["image"], item["conversations"]
    if not isinstance(image, str) or not image.strip():
        return f"record '{rid}': 'image' must be one relative path, got {image!r}"
    pair = _first_pair(turns) if isinstance(turns, list) else None
    if pair is None:
        return f"record '{rid}': 'conversations' has no human turn followed by a gpt turn"
    skill = item.get("skill", item.get("category", DEFAULT_SKILL))
    return Record(rid, image.strip(), pair[0].replace(IMAGE_TAG, "").strip(), pair[1].strip(), str(skill))


def read_records(path: Path) -> list[Record]:
    """Every record of the file; one error lists every malformed record."""
    if not path.is_file():
        raise DataError(f"data.path '{path}' does not exist; point data.path at a LLaVA JSON file "
                        f"({FORMAT})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"data.path '{path}' is not valid JSON ({err}); it must hold {FORMAT}") from err
    if not isinstance(raw, list):
        raise DataError(f"data.path '{path}' holds a JSON {type(raw).__name__}, not a list of records; "
                        f"it must hold {FORMAT}")
    parsed = [_parse(i, item) for i, item in enumerate(raw)]
    problems = [p for p in parsed if isinstance(p, str)]
    if problems:
        raise DataError(f"{len(problems)} record(s) of '{path}' cannot be used: {_listed(problems)}; "
                        f"fix or remove them (each must be {FORMAT})")
    return [p for p in parsed if isinstance(p, Record)]


def split_records(records: Sequence[Record], train_size: int, eval_size: int, seed: int
                  ) -> tuple[list[Record], list[Record]]:
    """Seeded shuffle of the images, then train_size records for train, eval_size for eval.

    Records of one image stay in one split (those past a full split's size are dropped).
    """
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(os.path.normpath(record.image), []).append(record)
    keys = list(groups)
    train: list[Record] = []
    evaluation: list[Record] = []
    for i in np.random.default_rng(seed).permutation(len(keys)):
        split, size = (train, train_size) if len(train) < train_size else (evaluation, eval_size)
        if len(split) >= size:
            break
        split.extend(groups[keys[int(i)]][:size - len(split)])
    return train, evaluation


def closed_candidates(records: Sequence[Record]) -> dict[str, list[str]]:
    """Skill -> its sorted distinct answers, for skills with at most MAX_CLOSED of them."""
    answers: dict[str, set[str]] = {}
    for record in records:
        answers.setdefault(record.skill, set()).add(record.answer)
    return {skill: sorted(found) for skill, found in answers.items() if len(found) <= MAX_CLOSED}


def image_problems(records: Sequence[Record], folder: Path, full: bool) -> list[str]:
    """What is wrong with the records' image files: missing, or unreadable when opened (`full`:
    decoded whole, else only the header read). One message per file, nothing kept in memory."""
    try:
        from PIL import Image
    except ImportError as err:  # Pillow is optional for the probe-only install
        raise DataError("loading LLaVA images needs Pillow; install it with `pip install pillow`") from err
    problems, seen = [], set()
    for record in records:
        file = folder / record.image
        if file in seen:
            continue
        seen.add(file)
        if not file.is_file():
            problems.append(f"image '{record.image}' of record '{record.id}' is missing ({file})")
            continue
        try:
            if full:
                decode(file, 16)
            else:
                with Image.open(file):
                    pass
        except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for damaged files
            problems.append(f"image '{record.image}' of record '{record.id}' is unreadable ({file}: {err})")
    return problems


def load_images(records: Sequence[Record], folder: Path, size: int, full: bool = False) -> ImageFiles:
    """The records' images, RGB, bilinearly resized to size x size when read: uint8 (N, 3, size,
    size), decoded on demand. Every file must exist and open (`full`: decode) now."""
    problems = image_problems(records, folder, full)
    if problems:
        raise DataError(f"{len(problems)} image(s) under data.image_folder '{folder}' cannot be used: "
                        f"{_listed(problems)}; check data.image_folder, or fix or remove those records")
    return ImageFiles([folder / record.image for record in records], size)


@BENCHMARKS.decorator("llava", "a LLaVA conversation JSON (data.path) with images in data.image_folder")
def load_llava(cfg: DataConfig) -> tuple[QADataset, QADataset]:
    return _load(cfg, full=False)


def _load(cfg: DataConfig, full: bool) -> tuple[QADataset, QADataset]:
    """The two splits; their images checked to exist and open (`full`: to decode)."""
    if cfg.path is None:
        raise DataError(f"data.path is not set; benchmark 'llava' needs data.path: a JSON file "
                        f"holding {FORMAT}")
    path = Path(cfg.path).expanduser()
    folder = Path(cfg.image_folder).expanduser() if cfg.image_folder is not None else path.parent
    records = read_records(path)
    wanted = cfg.train_size + cfg.eval_size
    if len(records) < wanted:
        raise DataError(f"data.path '{path}' has {len(records)} records, fewer than data.train_size + "
                        f"data.eval_size = {cfg.train_size} + {cfg.eval_size} = {wanted}; lower them "
                        f"or use a larger file")
    train, evaluation = split_records(records, cfg.train_size, cfg.eval_size, cfg.seed)
    if len(evaluation) < cfg.eval_size:
        raise DataError(f"only {len(evaluation)} records of '{path}' have images unused by the "
                        f"{len(train)} train records (records share images), fewer than data.eval_size = "
                        f"{cfg.eval_size}; lower data.train_size or data.eval_size")
    candidates = closed_candidates(records)

    def dataset(split: str, chosen: list[Record]) -> QADataset:
        return QADataset(f"{path.stem}/{split}", load_images(chosen, folder, cfg.image_size, full),
                         [r.question for r in chosen], [r.answer for r in chosen],
                         [r.skill for r in chosen], dict(candidates))

    return dataset("train", train), dataset("eval", evaluation)


_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})


def vqa_normalize(answer: str) -> str:
    """The VQA evaluation's normal form: lower case, no punctuation or articles, digits for numbers."""
    text = answer.lower().replace("'", "").replace("\u2019", "")   # don't -> dont
    text = re.sub(r"(?<=\d),(?=\d)", "", text)                     # 1,000 -> 1000
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)                # periods, not decimal points
    text = re.sub(r"[^\w\s.]|_", " ", text)                        # other punctuation
    return " ".join(_NUMBERS.get(word, word) for word in text.split() if word not in _ARTICLES)


def exact_match(prediction: str, answers: str | Sequence[str]) -> bool:
    """Whether the prediction equals any reference answer after `vqa_normalize`."""
    references = [answers] if isinstance(answers, str) else answers
    normal = vqa_normalize(prediction)
    return any(normal == vqa_normalize(answer) for answer in references)


@DATA_CHECKS.decorator("llava", "the file parses, has enough records, and every chosen image opens")
def check_llava(cfg: DataConfig) -> None:
    """What a trial would load, every image decoded once (at a small size, none kept): raises
    DataError naming each problem."""
    _load(cfg, full=True)
