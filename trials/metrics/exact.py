"""GQA's exact match and the mean aggregation, as lmms-eval 0.7.3 computes them.

lmms-eval's gqa task scores with its `exact_match` metric (api/metrics.py `exact_match_hf_evaluate`,
`ignore_case` and `ignore_punctuation` on, no VQA normalisation): the generation stripped (the task does
that), both sides lower-cased and ASCII punctuation (`string.punctuation`) deleted, then equality.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _numpy_lower(text: str) -> str:
    """What `np.char.lower(np.asarray([text]))[0]` gives: trailing NULs dropped (NumPy's fixed-width
    strings cannot hold them) and the lower case cut to the input's width ('İ' lower-cases to 2 chars)."""
    return text.lower()[: len(text)].rstrip("\x00")


def _gqa_form(text: str) -> str:
    return _numpy_lower(text).translate(_NO_PUNCTUATION).rstrip("\x00")


def exact_match(prediction: str, answers: str | Sequence[str]) -> bool:
    """Whether the prediction equals any reference after the official VQA answer normalisation
    (`normalize_answer`): the open-ended score of a LLaVA file's held-out split (`accuracy`)."""
    from trials.metrics.vqa import normalize_answer

    references = [answers] if isinstance(answers, str) else answers
    normal = normalize_answer(prediction)
    return any(normal == normalize_answer(answer) for answer in references)


def gqa_accuracy(prediction: str, answer: str) -> float:
    """1.0 when the generated answer equals GQA's answer, case and ASCII punctuation ignored, else 0.0."""
    return 1.0 if _gqa_form(prediction.strip()) == _gqa_form(answer) else 0.0


def mean(values: Sequence[float]) -> float:
    """lmms-eval's `mean` aggregation, `sum(values) / len(values)` (same summation order, so the same
    float); 0.0 for no values, where lmms-eval raises."""
    return float(sum(values) / len(values)) if values else 0.0
