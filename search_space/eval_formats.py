"""Evaluation sets in their released file formats (`data.eval:`), and the metrics each one gives.

A trial scores its VLM on every listed set after training; each set's metrics are named
`<name>/<metric>` (`name` defaults to the format: `vqav2/accuracy`, `pope/f1`, `docvqa/anls`) and
can be objectives and constraints. `trials.data.evalsets` reads the files (one loader per format,
keyed by the same names); `trials.metrics` scores them as the benchmarks' official code does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from search_space.registry import Registry

SHORT = "Answer the question using a single word or phrase."   # LLaVA-1.5's VQA suffix
LETTER = "Answer with the option's letter from the given choices directly."  # LLaVA's MC suffix
FileField = Literal["path", "questions", "annotations"]
AnswerBy = Literal["generate", "likelihood"]


@dataclass(frozen=True)
class EvalFormat:
    """What one released format needs and gives."""

    metrics: tuple[str, ...]          # metric names, unprefixed
    files: tuple[FileField, ...]      # the spec's keys that must name files
    prompt: str                       # the standard suffix after the question
    max_new_tokens: int               # greedy generation budget
    answer_by: AnswerBy               # how the reference evaluation answers
    layout: str                       # the released file(s), for error messages


EVAL_FORMATS: Registry[EvalFormat] = Registry("eval format")
_VQA = ("accuracy",)
for _name, _format, _desc in [
    ("vqav2", EvalFormat(_VQA, ("questions", "annotations"), SHORT, 16, "generate",
                         "questions: v2_OpenEnded_mscoco_*_questions.json, annotations: "
                         "v2_mscoco_*_annotations.json, images COCO_<split>_<image_id:012d>.jpg"),
     "VQAv2: VQA soft accuracy (min(#matching annotators / 3, 1) over 10 leave-one-out subsets)"),
    ("textvqa", EvalFormat(_VQA, ("path",), SHORT, 16, "generate",
                           "path: TextVQA_0.5.1_val.json ({'data': [...]}), images <image_id>.jpg"),
     "TextVQA: VQA soft accuracy"),
    ("vizwiz", EvalFormat(_VQA, ("path",), SHORT, 16, "generate",
                          "path: VizWiz val.json (a list of {'image', 'question', 'answers'})"),
     "VizWiz-VQA: VQA soft accuracy"),
    ("gqa", EvalFormat(_VQA, ("path",), SHORT, 16, "generate",
                       "path: testdev_balanced_questions.json ({question_id: {...}}), images <imageId>.jpg"),
     "GQA: exact match after the VQA answer normalisation"),
    ("pope", EvalFormat(("accuracy", "precision", "recall", "f1", "yes_ratio", "answered_yes"), ("path",),
                        SHORT, 8,
                        "generate", "path: coco_pope_*.json (JSON lines of {'question_id', 'image', "
                        "'text', 'label'})"),
     "POPE: yes/no hallucination probe: accuracy, precision, recall, F1, yes_ratio (lmms-eval's: of "
     "the labels), answered_yes (the POPE paper's yes-ratio: of the answers)"),
    ("mmbench", EvalFormat(("accuracy",), ("path",), LETTER, 4, "likelihood",
                           "path: mmbench_dev_*.tsv (index, question, hint, A-D, answer, category, "
                           "base64 image)"),
     "MMBench: multiple choice, circular evaluation (right only if right under every rotation)"),
    ("scienceqa", EvalFormat(("accuracy",), ("path",), LETTER, 4, "likelihood",
                             "path: ScienceQA problems.json, images <split>/<pid>/image.png"),
     "ScienceQA (image questions of a split): multiple-choice accuracy"),
    ("docvqa", EvalFormat(("anls",), ("path",), SHORT, 32, "generate",
                          "path: DocVQA val_v1.0.json ({'data': [{'questionId', 'question', "
                          "'image', 'answers'}]})"),
     "DocVQA: ANLS (average normalised Levenshtein similarity, threshold 0.5)"),
]:
    EVAL_FORMATS.register(_name, _format, _desc)


def _format_name(name: str) -> str:
    if name not in EVAL_FORMATS:
        raise ValueError(EVAL_FORMATS.unknown(name))
    return name


def _metric_prefix(name: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ValueError(f"eval name {name!r} must be lower-case letters, digits, '_' or '-' "
                         "(it prefixes the metric names, e.g. vqav2/accuracy)")
    return name


class EvalSpec(BaseModel):
    """One evaluation set: a released format, its files, and how it is asked."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    format: Annotated[str, AfterValidator(_format_name)]
    name: Annotated[str, AfterValidator(_metric_prefix)] | None = None  # metric prefix; default: format
    path: str | None = None
    questions: str | None = None
    annotations: str | None = None
    image_folder: str | None = None     # default: the folder of the (first) file
    split: str | None = None            # scienceqa: which split's questions (default test)
    limit: Annotated[int, Field(gt=0)] | None = None  # the first `limit` questions
    prompt: str | None = None           # suffix after the question; default: the format's standard
    max_new_tokens: Annotated[int, Field(gt=0, le=1024)] | None = None
    answer_by: AnswerBy | None = None   # default: as the benchmark's reference evaluation

    @model_validator(mode="after")
    def _files(self) -> EvalSpec:
        info = EVAL_FORMATS.get(self.format)
        missing = [key for key in info.files if getattr(self, key) is None]
        extra = [key for key in ("path", "questions", "annotations")
                 if key not in info.files and getattr(self, key) is not None]
        if missing:
            raise ValueError(f"eval format '{self.format}' needs {' and '.join(missing)} "
                             f"({info.layout})")
        if extra:
            raise ValueError(f"eval format '{self.format}' takes {' and '.join(info.files)}, not "
                             f"{' or '.join(extra)} ({info.layout})")
        return self

    @property
    def label(self) -> str:
        return self.name or self.format

    @property
    def info(self) -> EvalFormat:
        return EVAL_FORMATS.get(self.format)

    def metric_names(self) -> list[str]:
        return [f"{self.label}/{m}" for m in self.info.metrics]

    def suffix(self) -> str:
        return self.info.prompt if self.prompt is None else self.prompt

    def new_tokens(self) -> int:
        return self.max_new_tokens or self.info.max_new_tokens

    def answering(self) -> AnswerBy:
        return self.answer_by or self.info.answer_by


def eval_metric_names(specs: tuple[EvalSpec, ...]) -> list[str]:
    """Every metric the listed sets give, in order."""
    return [name for spec in specs for name in spec.metric_names()]


def duplicate_labels(specs: tuple[EvalSpec, ...]) -> list[str]:
    labels = [spec.label for spec in specs]
    return sorted({label for label in labels if labels.count(label) > 1})
