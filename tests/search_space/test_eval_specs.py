"""`data.eval`: evaluation sets in released formats, their metric names as objectives and
constraints, and bad specs refused with the YAML path and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_space.errors import SpaceError
from search_space.eval_formats import EVAL_FORMATS, EvalSpec
from search_space.load import load
from search_space.point import TrialConfig

SPACE = """\
name: evals
data:
  benchmark: probe
  train_size: 64
  eval_size: 32
  image_size: 32
  eval:
{evals}
language_model: {{source: tiny-llama, train: full}}
experts:
  clip: {{source: tiny-clip, tokens: 4}}
train: {{steps: 4, batch_size: 4, lr: {{low: 1.0e-4, high: 1.0e-3, log: true}}}}
objectives:
  - {{metric: {objective}, direction: maximize}}
search: {{trials: 2}}
"""
POPE = "    - {format: pope, path: pope.json, image_folder: coco}"
VQA = "    - {format: vqav2, questions: q.json, annotations: a.json}"


def _write(tmp_path: Path, evals: str, objective: str) -> Path:
    file = tmp_path / "space.yaml"
    file.write_text(SPACE.format(evals=evals, objective=objective))
    return file


@pytest.mark.parametrize("objective", ["pope/f1", "pope/yes_ratio", "vqav2/accuracy", "accuracy"])
def test_a_listed_sets_metrics_are_objectives(tmp_path: Path, objective: str) -> None:
    loaded = load(_write(tmp_path, f"{POPE}\n{VQA}", objective))
    assert [s.label for s in loaded.space.data.eval] == ["pope", "vqav2"]


@pytest.mark.parametrize(("evals", "objective", "fragment"), [
    (POPE, "vqav2/accuracy", "need that set listed under data.eval"),
    (POPE, "pope/f2", "did you mean 'pope/f1'"),
    ("    - {format: vqa2, path: x.json}", "accuracy", "did you mean 'vqav2'"),
    ("    - {format: vqav2, path: x.json}", "accuracy", "needs questions and annotations"),
    ("    - {format: pope, path: p.json, questions: q.json}", "accuracy", "takes path, not questions"),
    (f"{POPE}\n{POPE}", "accuracy", "lists pope more than once"),
    ("    - {format: pope, path: p.json, name: 'Bad Name'}", "accuracy", "lower-case"),
    ("    - {format: pope, path: p.json, limit: 0}", "accuracy", "greater than 0"),
])
def test_bad_eval_specs_are_refused_with_the_fix(tmp_path: Path, evals: str, objective: str,
                                                 fragment: str) -> None:
    with pytest.raises(SpaceError, match=fragment.replace("(", r"\(")):
        load(_write(tmp_path, evals, objective))


def test_every_format_names_its_metrics_and_standard_prompt() -> None:
    for name in EVAL_FORMATS.names():
        info = EVAL_FORMATS.get(name)
        assert info.metrics and info.files and info.prompt and info.max_new_tokens > 0
    spec = EvalSpec(format="mmbench", path="dev.tsv", name="mmb")
    assert spec.metric_names() == ["mmb/accuracy"] and spec.answering() == "likelihood"
    assert EvalSpec(format="pope", path="p.json").metric_names() == [
        "pope/accuracy", "pope/precision", "pope/recall", "pope/f1", "pope/yes_ratio", "pope/answered_yes"]


def test_eval_sets_are_part_of_the_identity_and_old_hashes_stay() -> None:
    plain = TrialConfig(experts={"clip": {"source": "tiny-clip"}})
    with_eval = TrialConfig(experts={"clip": {"source": "tiny-clip"}},
                            data={"eval": [{"format": "pope", "path": "p.json"}]})
    assert "eval" not in plain.canonical()["data"] and "system_prompt" not in plain.canonical()[
        "language_model"]
    assert with_eval.config_hash != plain.config_hash
