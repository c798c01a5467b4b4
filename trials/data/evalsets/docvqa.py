"""DocVQA (val_v1.0.json: {'data': [{'questionId', 'question', 'image', 'answers'}]}, images
relative to image_folder), asked "question\\n" + the short-answer suffix, scored by ANLS."""

from __future__ import annotations

from search_space import EvalSpec
from trials.data.base import EVAL_LOADERS, EvalSet
from trials.data.evalsets.common import (
    Images,
    Item,
    Problems,
    ask,
    evalset,
    first,
    folder_hint,
    image_folder,
    stream,
    texts,
)
from trials.data.images import RGB8
from trials.metrics import anls, mean

FIELDS = {"questionId": (int, str), "question": str, "image": str, "answers": list}


def _skill(record: dict, spec: EvalSpec) -> str:
    """The first of the question's types (handwritten, form, table/list, ...)."""
    kinds = texts(record.get("question_types"))
    return kinds[0] if kinds else spec.format


@EVAL_LOADERS.decorator("docvqa", "DocVQA val JSON, document images under image_folder")
def load_docvqa(spec: EvalSpec, size: int, pad: RGB8 | None) -> EvalSet:
    image = Images(image_folder(spec))
    problems = Problems(spec)
    items, references = [], []
    records = stream(spec, "path", "data.item", "questions (a list under 'data')")
    for i, record in enumerate(first(spec, records)):
        if not problems.check(f"question #{i}", record, FIELDS):
            continue
        answers = texts(record["answers"])
        if answers is None:
            problems.add(f"question #{i} (questionId {record['questionId']}) has 'answers' that are not a "
                         "non-empty list of strings (the test split has none: use val)")
            continue
        items.append(Item(f"questionId {record['questionId']}", image(record["image"]), record["image"],
                          ask(spec, record["question"]), answers[0], _skill(record, spec)))
        references.append(answers)
    problems.raise_any("question(s)")

    def score(predictions: list[str]) -> dict[str, float]:
        return {"anls": mean([anls(p, refs) for p, refs in zip(predictions, references, strict=True)])}

    return evalset(spec, items, size, pad, score, images_hint=folder_hint(image.folder))
