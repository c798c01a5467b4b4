"""ScienceQA-IMG (the official problems.json: pid -> problem; the image questions of one split, images
<image_folder>/<split>/<pid>/image.png), asked as LLaVA's ScienceQA eval asks them
("Context: hint\\nquestion\\nA. ..\\nB. ..\\n" + the letter suffix; no context line without a hint),
scored by multiple-choice accuracy."""

from __future__ import annotations

from search_space import EvalSpec
from trials.data.base import EVAL_LOADERS, EvalSet
from trials.data.evalsets.common import (
    Item,
    Problems,
    ask,
    evalset,
    fail,
    first,
    folder_hint,
    image_folder,
    source,
    stream,
    texts,
)
from trials.data.images import RGB8
from trials.metrics import choice_accuracy, scienceqa_option

LETTERS = "ABCDEFGHIJ"
DEFAULT_SPLIT = "test"
SPLIT_FIELDS = {"split": str}                      # every problem: which split, and whether an image
FIELDS = {"question": str, "choices": list, "answer": int}   # a chosen problem: what is asked


def _chosen(pid: str, problem: object, split: str, problems: Problems) -> bool:
    """Whether the problem is an image question of the split (noting what is wrong with it)."""
    if not problems.check(f"problem '{pid}'", problem, SPLIT_FIELDS):
        return False
    assert isinstance(problem, dict)
    if "image" not in problem:
        problems.add(f"problem '{pid}' has no 'image' (null when it has none)")
        return False
    if problem["split"] != split or not problem["image"]:
        return False
    if not problems.check(f"problem '{pid}'", problem, FIELDS):
        return False
    choices = texts(problem["choices"])
    if choices is None or not 2 <= len(choices) <= len(LETTERS):
        problems.add(f"problem '{pid}' has 'choices' that are not a list of 2-{len(LETTERS)} strings")
        return False
    if not 0 <= problem["answer"] < len(choices):
        problems.add(f"problem '{pid}' has 'answer' {problem['answer']}, not the position of one of its "
                     f"{len(choices)} choices")
        return False
    if not isinstance(problem["image"], str) or not isinstance(problem.get("hint", ""), str):
        problems.add(f"problem '{pid}' has an 'image' or 'hint' that is not a string")
        return False
    return True


def _body(problem: dict) -> str:
    hint = problem.get("hint", "").strip()
    lines = [f"Context: {hint}"] if hint else []
    lines.append(problem["question"].strip())
    lines += [f"{letter}. {choice}" for letter, choice in zip(LETTERS, problem["choices"], strict=False)]
    return "\n".join(lines)


@EVAL_LOADERS.decorator("scienceqa", "ScienceQA problems.json, the image questions of a split")
def load_scienceqa(spec: EvalSpec, size: int, pad: RGB8 | None) -> EvalSet:
    split = spec.split or DEFAULT_SPLIT
    folder = image_folder(spec)
    problems = Problems(spec)
    records = stream(spec, "path", "", "problems (an object of pid -> problem)", pairs=True)
    chosen = first(spec, ((pid, problem) for pid, problem in records
                          if _chosen(pid, problem, split, problems)))
    items, answers, letters = [], [], []
    for pid, problem in chosen:
        name = f"{split}/{pid}/{problem['image']}"
        subject = problem.get("subject")
        items.append(Item(f"problem '{pid}'", folder / name, name, ask(spec, _body(problem)),
                          LETTERS[problem["answer"]], subject if isinstance(subject, str) else spec.format))
        answers.append(LETTERS[problem["answer"]])
        letters.append(tuple(LETTERS[:len(problem["choices"])]))
    problems.raise_any("problem(s)")
    if not items:
        raise fail(spec, f"no problem of split '{split}' in '{source(spec)}' has an image; set split to "
                         "one of the file's splits (train, val, test, minival, minitest)")

    def score(predictions: list[str]) -> dict[str, float]:
        picked = [scienceqa_option(p, options) for p, options in zip(predictions, letters, strict=True)]
        return {"accuracy": float(choice_accuracy(picked, answers))}

    return evalset(spec, items, size, pad, score, letters,
                   images_hint=f"{folder_hint(folder)}: it must hold <split>/<pid>/image.png")
