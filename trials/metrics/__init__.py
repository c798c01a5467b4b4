"""The benchmarks' official scores, computed as lmms-eval 0.7.3's own metric code computes them.

Pure Python, no torch. Which function scores which lmms-eval task:

- vqav2: `vqav2_accuracy`; textvqa, vizwiz_vqa: `vqa_accuracy` (`textvqa_accuracy`, `vizwiz_vqa_accuracy`);
  `VQA_ACCURACY.get(task)` by name.
- gqa: `gqa_accuracy`; docvqa: `anls`; pope: `pope_metrics` over `pope_label`s.
- mmbench (judge-free, circular): `mmbench_option` per row, then `circular_accuracy`.
- scienceqa: `scienceqa_option`, then `choice_accuracy`; any letter choice: `option_letter`.
- per-question scores to a benchmark score: `mean` (lmms-eval's `mean` aggregation).

tests/trials/metrics/test_metrics_parity.py checks every one against lmms-eval's code for exact equality.
"""

from trials.metrics.anls import anls, levenshtein
from trials.metrics.choice import (
    choice_accuracy,
    circular_accuracy,
    mmbench_option,
    option_letter,
    scienceqa_option,
)
from trials.metrics.exact import exact_match, gqa_accuracy, mean
from trials.metrics.pope import pope_label, pope_label_llava, pope_metrics
from trials.metrics.vqa import (
    VQA_ACCURACY,
    normalize_answer,
    normalize_vqav2_answer,
    soft_accuracy,
    textvqa_accuracy,
    vizwiz_vqa_accuracy,
    vqa_accuracy,
    vqav2_accuracy,
)

__all__ = [
    "VQA_ACCURACY",
    "anls",
    "choice_accuracy",
    "circular_accuracy",
    "exact_match",
    "gqa_accuracy",
    "levenshtein",
    "mean",
    "mmbench_option",
    "normalize_answer",
    "normalize_vqav2_answer",
    "option_letter",
    "pope_label",
    "pope_label_llava",
    "pope_metrics",
    "scienceqa_option",
    "soft_accuracy",
    "textvqa_accuracy",
    "vizwiz_vqa_accuracy",
    "vqa_accuracy",
    "vqav2_accuracy",
]
