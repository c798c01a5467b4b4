"""GQA (testdev_balanced_questions.json: question_id -> record, images <imageId>.jpg), asked as
LLaVA-1.5 asks it ("question\\n" + the short-answer suffix), scored by exact match."""

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
)
from trials.data.images import RGB8
from trials.metrics import gqa_accuracy, mean

FIELDS = {"imageId": str, "question": str, "answer": str}


def _skill(record: dict, spec: EvalSpec) -> str:
    """The question's structural type (query, verify, logical, choose, compare)."""
    types = record.get("types")
    kind = types.get("structural") if isinstance(types, dict) else None
    return kind if isinstance(kind, str) and kind else spec.format


@EVAL_LOADERS.decorator("gqa", "GQA balanced questions JSON, images <imageId>.jpg")
def load_gqa(spec: EvalSpec, size: int, pad: RGB8 | None) -> EvalSet:
    image = Images(image_folder(spec))
    problems = Problems(spec)
    items, references = [], []
    records = stream(spec, "path", "", "questions (an object of question_id -> question)", pairs=True)
    for qid, record in first(spec, records):
        if not problems.check(f"question '{qid}'", record, FIELDS):
            continue
        name = f"{record['imageId']}.jpg"
        items.append(Item(f"question '{qid}'", image(name), name, ask(spec, record["question"]),
                          record["answer"], _skill(record, spec)))
        references.append(record["answer"])
    problems.raise_any("question(s)")

    def score(predictions: list[str]) -> dict[str, float]:
        return {"accuracy": mean([gqa_accuracy(p, a) for p, a in zip(predictions, references, strict=True)])}

    return evalset(spec, items, size, pad, score, images_hint=folder_hint(image.folder))
