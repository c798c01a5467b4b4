"""POPE (JSON lines of {'question_id', 'image', 'text', 'label'}, or one JSON list of them; lmms-eval's
copies add 'category'), asked as LLaVA-1.5 asks it ("text\\n" + the short-answer suffix); the yes/no
read from each answer gives accuracy, precision, recall, F1 and the yes-ratio."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from search_space import EvalSpec
from trials.data.base import EVAL_LOADERS, EvalSet
from trials.data.evalsets.common import (
    Images,
    Item,
    Problems,
    ask,
    evalset,
    fail,
    first,
    folder_hint,
    image_folder,
    source,
)
from trials.data.images import RGB8
from trials.metrics import pope_metrics

FIELDS = {"question_id": (int, str), "image": str, "text": str, "label": str}
LABELS = ("yes", "no")


def _records(spec: EvalSpec, path: Path, problems: Problems) -> Iterator[tuple[str, object]]:
    """(where, record) for each record: a JSON list's items, or one per non-blank line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise fail(spec, f"path file '{path}' is not UTF-8 text ({err})") from err
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise fail(spec, f"path file '{path}' is not valid JSON ({err})") from err
        yield from ((f"record #{i}", record) for i, record in enumerate(records))
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as err:
            problems.add(f"line {number} is not JSON ({err})")


@EVAL_LOADERS.decorator("pope", "POPE JSON lines (question_id, image, text, label), COCO images")
def load_pope(spec: EvalSpec, size: int, pad: RGB8 | None) -> EvalSet:
    path = source(spec)
    image = Images(image_folder(spec))
    problems = Problems(spec)
    items, labels = [], []
    for where, record in first(spec, _records(spec, path, problems)):
        if not problems.check(where, record, FIELDS):
            continue
        assert isinstance(record, dict)
        label = record["label"].strip().lower()
        if label not in LABELS:
            problems.add(f"{where} has 'label' {record['label']!r}, not 'yes' or 'no'")
            continue
        category = record.get("category")
        items.append(Item(f"question_id {record['question_id']}", image(record["image"]), record["image"],
                          ask(spec, record["text"]), label,
                          category if isinstance(category, str) and category else spec.format))
        labels.append(label)
    problems.raise_any()
    if not items:
        raise fail(spec, f"path file '{path}' holds no records")

    def score(predictions: list[str]) -> dict[str, float]:
        return {name: float(value) for name, value in pope_metrics(predictions, labels).items()}

    return evalset(spec, items, size, pad, score, [LABELS] * len(items),
                   images_hint=folder_hint(image.folder))
