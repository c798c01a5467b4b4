"""Open-ended VQA sets scored by VQA soft accuracy: VQAv2 (questions + annotations), TextVQA and
VizWiz, each read in its released JSON layout and asked as LLaVA-1.5's eval scripts ask them:
"question\\n" + the short-answer suffix (VizWiz also says how to answer an unanswerable one)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from search_space import EvalSpec
from trials.data.base import EVAL_LOADERS, EvalSet
from trials.data.evalsets.common import (
    Images,
    Item,
    Problems,
    Score,
    ask,
    evalset,
    fail,
    first,
    folder_hint,
    image_folder,
    scalar,
    source,
    stream,
    texts,
)
from trials.data.images import RGB8
from trials.metrics import mean, vqa_accuracy, vqav2_accuracy

UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."  # LLaVA's
QUESTION_FIELDS = {"image_id": int, "question": str, "question_id": int}
ANNOTATION_FIELDS = {"question_id": int, "answers": list}
TEXTVQA_FIELDS = {"question_id": (int, str), "question": str, "image_id": str, "answers": list}
VIZWIZ_FIELDS = {"image": str, "question": str, "answers": list}


def vqa_scorer(references: Sequence[list[str]], accuracy: Callable[[str, Sequence[str]], float]) -> Score:
    """Mean VQA soft accuracy (`accuracy`: the benchmark's normalisation) of each prediction against its
    question's annotator answers."""
    def score(predictions: list[str]) -> dict[str, float]:
        pairs = zip(predictions, references, strict=True)
        return {"accuracy": mean([accuracy(prediction, refs) for prediction, refs in pairs])}

    return score


def _skill(record: dict, spec: EvalSpec) -> str:
    kind = record.get("answer_type")
    return kind if isinstance(kind, str) and kind else spec.format


@EVAL_LOADERS.decorator("vqav2", "VQAv2 questions + annotations JSON, COCO images")
def load_vqav2(spec: EvalSpec, size: int, pad: RGB8 | None) -> EvalSet:
    problems = Problems(spec, "questions")
    asked = []
    records = stream(spec, "questions", "questions.item", "questions (a list under 'questions')")
    for i, record in enumerate(first(spec, records)):
        where = f"question #{i}" + (f" (question_id {record['question_id']})"
                                    if isinstance(record, dict) and "question_id" in record else "")
        if problems.check(where, record, QUESTION_FIELDS):
            asked.append(record)
    problems.raise_any("question(s)")
    subtype = scalar(spec, "questions", "data_subtype") or scalar(spec, "annotations", "data_subtype")
    if not isinstance(subtype, str) or not subtype:
        raise fail(spec, f"neither the questions file '{source(spec, 'questions')}' nor the annotations "
                         "file says its 'data_subtype' (e.g. val2014), which names the images "
                         "COCO_<data_subtype>_<image_id:012d>.jpg")
    notes = _annotations(spec, {record["question_id"] for record in asked})
    image = Images(image_folder(spec, "questions"))
    items, references = [], []
    for question in asked:
        answers, shown, skill = notes[question["question_id"]]
        name = f"COCO_{subtype}_{question['image_id']:012d}.jpg"
        items.append(Item(f"question_id {question['question_id']}", image(name), name,
                          ask(spec, question["question"]), shown, skill))
        references.append(answers)
    return evalset(spec, items, size, pad, vqa_scorer(references, vqav2_accuracy),
                   images_hint=folder_hint(image.folder))


Note = tuple[list[str], str, str]   # a question's annotator answers, the answer shown, its answer type


def _annotations(spec: EvalSpec, wanted: set[int]) -> dict[int, Note]:
    """What the annotations say of every wanted question (read until all are found)."""
    problems = Problems(spec, "annotations")
    found: dict[int, Note] = {}
    records = stream(spec, "annotations", "annotations.item", "annotations (a list under 'annotations')")
    for i, record in enumerate(records):
        qid = record.get("question_id") if isinstance(record, dict) else None
        if qid not in wanted and isinstance(qid, int):
            continue
        if not problems.check(f"annotation #{i}", record, ANNOTATION_FIELDS):
            continue
        answers = texts(record["answers"], "answer")
        if answers is None:
            problems.add(f"annotation #{i} (question_id {qid}) has 'answers' that are not a list of "
                         "{'answer': '...'} objects")
            continue
        chosen = record.get("multiple_choice_answer")
        found[qid] = (answers, chosen if isinstance(chosen, str) else answers[0], _skill(record, spec))
        if len(found) == len(wanted):
            break
    problems.raise_any("annotation(s)")
    missing = sorted(wanted - set(found))
    if missing:
        shown = ", ".join(str(qid) for qid in missing[:10]) + (f" and {len(missing) - 10} more"
                                                               if len(missing) > 10 else "")
        raise fail(spec, f"the annotations file '{source(spec, 'annotations')}' has no annotation for "
                         f"{len(missing)} question(s) (question_id {shown}); pair the questions file "
                         "with the annotations of the same split")
    return found


@EVAL_LOADERS.decorator("textvqa", "TextVQA_0.5.1_val.json, images <image_id>.jpg")
def load_textvqa(spec: EvalSpec, size: int, pad: RGB8 | None) -> EvalSet:
    image = Images(image_folder(spec))
    problems = Problems(spec)
    items, references = [], []
    for i, record in enumerate(first(spec, stream(spec, "path", "data.item", "questions (a list under "
                                                                            "'data')"))):
        where = f"question #{i}"
        if not problems.check(where, record, TEXTVQA_FIELDS):
            continue
        answers = texts(record["answers"])
        if answers is None:
            problems.add(f"{where} (question_id {record['question_id']}) has 'answers' that are not a "
                         "non-empty list of strings")
            continue
        name = f"{record['image_id']}.jpg"
        items.append(Item(f"question_id {record['question_id']}", image(name), name,
                          ask(spec, record["question"]), answers[0], spec.format))
        references.append(answers)
    problems.raise_any("question(s)")
    return evalset(spec, items, size, pad, vqa_scorer(references, vqa_accuracy),
                   images_hint=folder_hint(image.folder))


@EVAL_LOADERS.decorator("vizwiz", "VizWiz val.json (a list of questions), images under image_folder")
def load_vizwiz(spec: EvalSpec, size: int, pad: RGB8 | None) -> EvalSet:
    image = Images(image_folder(spec))
    suffix = f"{UNANSWERABLE}\n{spec.suffix()}" if spec.prompt is None else spec.prompt
    problems = Problems(spec)
    items, references = [], []
    for i, record in enumerate(first(spec, stream(spec, "path", "item", "questions (a top-level list)"))):
        where = f"question #{i}"
        if not problems.check(where, record, VIZWIZ_FIELDS):
            continue
        answers = texts(record["answers"], "answer")
        if answers is None:
            problems.add(f"{where} ({record['image']}) has 'answers' that are not a list of "
                         "{'answer': '...'} objects")
            continue
        items.append(Item(f"question #{i} ({record['image']})", image(record["image"]),
                          record["image"], ask(spec, record["question"], suffix), answers[0],
                          _skill(record, spec)))
        references.append(answers)
    problems.raise_any("question(s)")
    return evalset(spec, items, size, pad, vqa_scorer(references, vqa_accuracy),
                   images_hint=folder_hint(image.folder))
