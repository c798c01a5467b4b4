"""POPE's scores, as lmms-eval 0.7.3's pope task (tasks/pope/utils.py) computes them.

lmms-eval does not parse a generation: it lower-cases and strips it and compares it with "yes"/"no", so
"Yes, there is." is wrong and counts in neither precision nor recall. Its `yes_ratio` is the share of
*ground-truth* "yes" labels (the POPE paper's is the share of predicted "yes"; LLaVA's eval_pope.py
parses generations with `pope_label_llava`). Both are followed here as lmms-eval has them, and
`answered_yes` adds the POPE paper's yes-ratio (the share of answers that are "yes": the model's bias).
"""

from __future__ import annotations

from collections.abc import Sequence

_LABELS = ("yes", "no")


def pope_label(text: str) -> str:
    """The answer lmms-eval scores: the generation stripped and lower-cased. It is "yes" or "no" when the
    model answered in one word, as the prompt asks; anything else is scored wrong."""
    return text.strip().lower().strip()


def pope_label_llava(text: str) -> str:
    """LLaVA's / POPE's parse, always "yes" or "no": the first sentence says no if it has the word
    "No", "no" or "not" (commas removed, words split at spaces)."""
    first = text.split(".")[0].replace(",", "")
    words = first.split(" ")
    return "no" if "No" in words or "not" in words or "no" in words else "yes"


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """accuracy, precision, recall, f1 (positive class "yes") and yes_ratio (of the labels) of generated
    answers against "yes"/"no" labels; a ratio with nothing to count is 0.0, as in lmms-eval."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    said = [pope_label(text) for text in predictions]
    truth = [pope_label(label) for label in labels]
    wrong = sorted({label for label in truth if label not in _LABELS})
    if wrong:
        raise ValueError(f"POPE labels are 'yes' or 'no', not {wrong}")
    if not truth:
        return {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0,
                "answered_yes": 0.0}
    yes_yes = sum(s == "yes" and t == "yes" for s, t in zip(said, truth, strict=True))
    yes_no = sum(s == "yes" and t == "no" for s, t in zip(said, truth, strict=True))
    no_yes = sum(s == "no" and t == "yes" for s, t in zip(said, truth, strict=True))
    precision = yes_yes / (yes_yes + yes_no) if yes_yes + yes_no > 0 else 0.0
    recall = yes_yes / (yes_yes + no_yes) if yes_yes + no_yes > 0 else 0.0
    f1 = 2 * (precision * recall) / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "accuracy": sum(s == t for s, t in zip(said, truth, strict=True)) / len(truth),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": truth.count("yes") / len(truth),
        "answered_yes": said.count("yes") / len(said),
    }
