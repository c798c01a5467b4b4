"""DocVQA's ANLS for one question, as lmms-eval 0.7.3's `anls` metric (api/metrics.py) computes it.

lmms-eval follows Qwen-VL's infographicsvqa_eval.py: the distance is taken between the normalised strings
(stripped, lower-cased, runs of whitespace made one space), but it is divided by the longer of the
*unnormalised* answer and prediction (their `.upper()` lengths), exactly as written there.
"""

from __future__ import annotations

from collections.abc import Sequence


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; each costs 1) between two strings, by code point."""
    if len(a) > len(b):
        a, b = b, a
    previous = list(range(len(a) + 1))
    for row, char_b in enumerate(b, start=1):
        current = [row]
        for column, char_a in enumerate(a):
            if char_a == char_b:
                current.append(previous[column])
            else:
                current.append(1 + min(previous[column], previous[column + 1], current[-1]))
        previous = current
    return previous[-1]


def _normal(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """1 - the smallest normalised edit distance to a reference answer; 0.0 when that is below
    `threshold` (a score equal to it stays) or there are no references."""
    if not answers:
        return 0.0
    predicted = prediction.strip()  # lmms-eval's task strips every generation before scoring
    detected = _normal(predicted)
    distances = []
    for answer in answers:
        length = max(len(answer.upper()), len(predicted.upper()))
        distance = levenshtein(_normal(answer), detected)
        distances.append(0.0 if length == 0 else distance / length)
    score = 1 - min(distances)
    return 0.0 if score < threshold else float(score)
