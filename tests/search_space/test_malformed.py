"""Malformed inputs: each gives exit 2, no traceback, and the exact YAML path (and line)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vlmsearch.cli import main

BASE = """\
name: t
data: {benchmark: probe, train_size: 64, eval_size: 32, image_size: 96, seed: 0}
language_model: {source: tiny-llama, train: full}
experts:
  pool:
    clip:
      source: tiny-clip
      layers: {choices: [-1, [-1, -2]]}
      tokens: {choices: [16, 64]}
    dinov2: {source: tiny-dinov2, layers: -1, tokens: 64}
    sam: {source: tiny-sam, tokens: 16}
  subset: {min: 1, max: 3}
fusion:
  choices:
    - {kind: channel_concat}
    - {kind: sequence_concat, interleave: {choices: [false, true]}}
    - {kind: cross_attention, heads: {choices: [1, 4]}}
projector: {choices: [linear, mlp2x_gelu]}
positions: {choices: [original, share_by_row]}
train:
  steps: 40
  batch_size: 8
  lr: {low: 1.0e-4, high: 3.0e-3, log: true}
objectives:
  - {metric: accuracy, direction: maximize}
  - {metric: visual_tokens, direction: minimize}
constraints:
  - {metric: visual_tokens, max: 512}
search: {sampler: tpe, trials: 4}
"""

POINT = """\
name: p
experts:
  clip: {source: tiny-clip, tokens: 16}
  dinov2: {source: tiny-dinov2, tokens: 64}
fusion: {kind: sequence_concat, interleave: false}
"""

# (id, old text, new text, expected "path: line N", expected message fragment)
CASES = [
    ("unknown-top-key", "search: {sampler: tpe, trials: 4}\n",
     "search: {sampler: tpe, trials: 4}\nextra_key: 1\n", "extra_key: line 30", "unknown key"),
    ("misspelt-key", "      tokens: {choices: [16, 64]}", "      tokns: {choices: [16, 64]}",
     "experts.pool.clip.tokns: line 9", "did you mean 'tokens'"),
    ("wrong-type-int", "  steps: 40", "  steps: forty", "train.steps: line 21", "valid integer"),
    ("wrong-type-fraction", "  batch_size: 8", "  batch_size: 8.5", "train.batch_size: line 22",
     "integer"),
    ("range-low-above-high", "lr: {low: 1.0e-4,", "lr: {low: 1.0e-2,", "train.lr: line 23", "swap"),
    ("log-range-nonpositive", "lr: {low: 1.0e-4,", "lr: {low: 0.0,", "train.lr: line 23",
     "log range needs low > 0"),
    ("empty-choices", "positions: {choices: [original, share_by_row]}", "positions: {choices: []}",
     "positions.choices: line 19", "at least 1 item"),
    ("repeated-choice", "projector: {choices: [linear, mlp2x_gelu]}",
     "projector: {choices: [linear, linear]}", "projector: line 18", "listed twice"),
    ("subset-min-above-pool", "subset: {min: 1, max: 3}", "subset: {min: 4, max: 3}",
     "experts.subset.min: line 12", "the pool has 3 experts"),
    ("subset-max-above-pool", "subset: {min: 1, max: 3}", "subset: {min: 1, max: 5}",
     "experts.subset.max: line 12", "lower subset.max to 3"),
    ("subset-min-above-max", "subset: {min: 1, max: 3}", "subset: {min: 3, max: 2}",
     "experts.subset.min: line 12", "swap them"),
    ("require-unknown", "subset: {min: 1, max: 3}", "subset: {min: 1, max: 3, require: [clip2]}",
     "experts.subset.require[0]: line 12", "did you mean 'clip'"),
    ("forbid-unknown", "subset: {min: 1, max: 3}",
     "subset: {min: 1, max: 3, forbid_together: [[clip, dinov]]}",
     "experts.subset.forbid_together[0][1]: line 12", "did you mean 'dinov2'"),
    ("forbid-all-required", "subset: {min: 1, max: 3}",
     "subset: {min: 1, max: 3, require: [clip, sam], forbid_together: [[clip, sam]]}",
     "experts.subset.forbid_together[0]: line 12", "drop one from `require`"),
    ("unknown-fusion", "{kind: cross_attention, heads", "{kind: cross_atn, heads",
     "fusion.choices[2]: line 17", "unknown fusion 'cross_atn'; did you mean 'cross_attention'?"),
    ("fusion-without-kind", "    - {kind: channel_concat}", "    - {grid: 4}",
     "fusion.choices[0]: line 15", "needs `kind`"),
    ("unknown-position", "[original, share_by_row]}", "[original, share_by_rows]}",
     "positions.choices[1]: line 19", "did you mean 'share_by_row'?"),
    ("unknown-projector", "[linear, mlp2x_gelu]", "[linear, mlp2_gelu]",
     "projector.choices[1]: line 18", "did you mean 'mlp2x_gelu'?"),
    ("unknown-objective-metric", "{metric: visual_tokens, direction: minimize}",
     "{metric: visual_token, direction: minimize}", "objectives[1].metric: line 26",
     "did you mean 'visual_tokens'?"),
    ("unknown-constraint-metric", "{metric: visual_tokens, max: 512}",
     "{metric: visual_tokns, max: 512}", "constraints[0].metric: line 28",
     "did you mean 'visual_tokens'?"),
    ("unknown-skill", "{metric: accuracy, direction: maximize}",
     "{metric: accuracy/colour, direction: maximize}", "objectives[0].metric: line 25",
     "did you mean 'accuracy/color'?"),
    ("non-square-tokens", "tokens: {choices: [16, 64]}", "tokens: {choices: [16, 60]}",
     "experts.pool.clip.tokens.choices[1]: line 9",
     "60 is not a perfect square (it sets a square grid); use 49 or 64"),
    ("layer-beyond-depth", "layers: {choices: [-1, [-1, -2]]}", "layers: {choices: [-1, [-1, 9]]}",
     "experts.pool.clip.layers.choices[1]: line 8", "layer 9 is beyond tiny-clip's depth"),
    ("repeated-layer", "layers: {choices: [-1, [-1, -2]]}", "layers: {choices: [-1, [-1, -1]]}",
     "experts.pool.clip.layers.choices[1]: line 8", "repeats a layer"),
    ("mean-of-unequal-widths", "    sam: {source: tiny-sam, tokens: 16}",
     "    sam: {source: tiny-convnext, layers: [1, -1], merge: mean, tokens: 9}",
     "experts.pool.sam.layers: line 11", "merge: mean cannot average them"),
    ("tokens-exceed-grid", "{source: tiny-dinov2, layers: -1, tokens: 64}",
     "{source: tiny-dinov2, layers: -1, tokens: 81}", "experts.pool.dinov2.tokens: line 10",
     "tokens 81 exceeds tiny-dinov2's 8x8 grid"),
    ("unknown-preset", "source: tiny-clip", "source: tiny-clp", "experts.pool.clip.source: line 7",
     "unknown expert preset 'tiny-clp'; did you mean 'tiny-clip'?"),
    ("missing-model-dir", "source: tiny-clip", "source: ./no/such/model",
     "experts.pool.clip.source: line 7", "model directory './no/such/model' does not exist"),
    ("unknown-lm-preset", "source: tiny-llama", "source: tiny-lama", "language_model.source: line 3",
     "did you mean 'tiny-llama'?"),
    ("missing-direction", "{metric: accuracy, direction: maximize}", "{metric: accuracy}",
     "objectives[0].direction: line 25", "required"),
    ("bad-direction", "direction: maximize}", "direction: maximise}",
     "objectives[0].direction: line 25", "'maximize' or 'minimize'"),
    ("range-on-name", "projector: {choices: [linear, mlp2x_gelu]}", "projector: {low: 1, high: 2}",
     "projector: line 18", "takes {choices: [...]}"),
    ("fractional-int-range", "  steps: 40", "  steps: {low: 10.5, high: 40}",
     "train.steps.low: line 21", "fractional part"),
    ("range-end-invalid", "heads: {choices: [1, 4]}", "heads: {low: 0, high: 4}",
     "fusion.choices[2].heads.low: line 17", "greater than or equal to 1"),
    ("grid-sampler-unbounded", "search: {sampler: tpe,", "search: {sampler: grid,",
     "search.sampler: line 29", "needs a finite space"),
    ("unknown-sampler", "search: {sampler: tpe,", "search: {sampler: tpee,", "search.sampler: line 29",
     "'tpe'"),
    ("cross-attention-single-expert", "subset: {min: 1, max: 3}", "subset: {min: 1, max: 1}",
     "fusion.choices[2].kind: line 17", "needs at least 2 experts"),
    ("duplicate-key", "  steps: 40\n", "  steps: 40\n  steps: 50\n", "train.steps: line 22",
     "duplicate key 'steps'"),
    ("constraint-without-bounds", "{metric: visual_tokens, max: 512}", "{metric: visual_tokens}",
     "constraints[0]: line 28", "needs `max`, `min` or both"),
    ("asha-multi-objective", "search: {sampler: tpe, trials: 4}",
     "search: {sampler: tpe, trials: 4, early_stopping: {kind: asha, min_steps: 10}}",
     "search.early_stopping.kind: line 29", "use mo_asha"),
    ("min-steps-too-large", "search: {sampler: tpe, trials: 4}",
     "search: {sampler: tpe, trials: 4, early_stopping: {kind: mo_asha, min_steps: 40}}",
     "search.early_stopping.min_steps: line 29", "must be below train.steps"),
    ("bad-study-name", "name: t", "name: bad name!", "name: line 1", "must start with a letter or digit"),
    ("no-objectives", "objectives:\n  - {metric: accuracy, direction: maximize}\n"
     "  - {metric: visual_tokens, direction: minimize}\n", "", "objectives:",
     "needs at least one objective"),
    ("two-primaries", "    sam: {source: tiny-sam, tokens: 16}",
     "    sam: {source: tiny-sam, tokens: 16, primary: true}\n"
     "    mae: {source: tiny-mae, tokens: 16, primary: true}", "experts.pool.mae: line 12",
     "only one expert can be primary"),
    ("yaml-syntax", "    sam: {source: tiny-sam, tokens: 16}", "    sam: {source: tiny-sam, tokens: 16",
     "(top level): line 12", "YAML syntax error"),
    ("tab-indent", "  steps: 40", "\tsteps: 40", "(top level): line 21", "YAML syntax error"),
    # numbers that are not what they look like (issue 19, class 5): each refused by `check`
    ("bool-steps", "  steps: 40", "  steps: true", "train.steps: line 21", "a boolean, not a whole number"),
    ("bool-batch", "  batch_size: 8", "  batch_size: false", "train.batch_size: line 22", "a boolean"),
    ("negative-seed", "image_size: 96, seed: 0}", "image_size: 96, seed: -1}", "data.seed: line 2",
     "greater than or equal to 0"),
    ("seed-beyond-32-bits", "image_size: 96, seed: 0}", "image_size: 96, seed: 4294967296}",
     "data.seed: line 2", "less than or equal to 4294967295"),
    ("absurd-train-size", "train_size: 64,", "train_size: 1000000000000000000000000000000,",
     "data.train_size: line 2", "less than or equal to 1000000000"),
    ("absurd-steps", "  steps: 40", "  steps: 10000000000", "train.steps: line 21", "less than or equal to"),
    ("infinite-range-bound", "lr: {low: 1.0e-4, high: 3.0e-3", "lr: {low: 1.0e-4, high: .inf",
     "train.lr.high: line 23", "finite number"),
    ("infinite-int-range", "heads: {choices: [1, 4]}", "heads: {low: 1, high: .inf}",
     "fusion.choices[2].heads.high: line 17", "finite number"),
    ("nan-constraint", "{metric: visual_tokens, max: 512}", "{metric: visual_tokens, max: .nan}",
     "constraints[0].max: line 28", "finite number"),
    ("infinite-weight-decay", "  batch_size: 8", "  batch_size: 8\n  weight_decay: .inf",
     "train.weight_decay: line 23", "finite number"),
    # a rule per value, over a whole range (class 1): the ends pass, a value inside does not
    ("square-tokens-inside-range", "tokens: {choices: [16, 64]}", "tokens: {low: 16, high: 64}",
     "experts.pool.clip.tokens: line 9", "includes 17, which is refused: 17 is not a perfect square"),
    ("square-tokens-range-fix", "tokens: {choices: [16, 64]}", "tokens: {low: 16, high: 36}",
     "experts.pool.clip.tokens: line 9", "{choices: [16, 25, 36]}"),
    ("square-tokens-stepped-range", "tokens: {choices: [16, 64]}", "tokens: {low: 16, high: 64, step: 16}",
     "experts.pool.clip.tokens: line 9", "includes 32"),
    ("square-queries-inside-range", "{kind: cross_attention, heads: {choices: [1, 4]}}",
     "{kind: sva, queries: {low: 9, high: 16}}", "fusion.choices[2].queries: line 17",
     "includes 10, which is refused"),
    ("range-end-inside-pool", "tokens: {choices: [16, 64]}", "tokens: {low: 0, high: 64}",
     "experts.pool.clip.tokens.low: line 9", "greater than or equal to 1"),
    ("infinite-cpu", "search: {sampler: tpe, trials: 4}",
     "search: {sampler: tpe, trials: 4, resources: {cpu: .inf}}",
     "search.resources.cpu: line 29", "finite number"),
]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    argv = sys.argv
    sys.argv = ["vlmsearch", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_base_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["check", str(write(tmp_path, BASE))], capsys)
    assert code == 0, err
    assert "valid search space 't'" in out


@pytest.mark.parametrize(("old", "new", "where", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_malformed(tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str,
                   where: str, fragment: str) -> None:
    assert old in BASE, "the case must change the base text"
    code, out, err = run_cli(["check", str(write(tmp_path, BASE.replace(old, new, 1)))], capsys)
    assert code == 2
    assert "Traceback" not in err + out
    lines = [line.strip() for line in err.splitlines()[1:]]
    matching = [line for line in lines if line.startswith(where)]
    assert matching, f"no problem at {where!r} in:\n{err}"
    assert any(fragment in line for line in matching), err


def test_every_problem_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (BASE.replace("  steps: 40", "  steps: forty")
            .replace("tokens: {choices: [16, 64]}", "tokens: {choices: [16, 60]}")
            .replace("cross_attention, heads", "cross_atn, heads"))
    code, _, err = run_cli(["check", str(write(tmp_path, text))], capsys)
    assert code == 2
    assert "3 problems" in err.splitlines()[0]
    for where in ("train.steps: line 21", "experts.pool.clip.tokens.choices[1]: line 9",
                  "fusion.choices[2]: line 17"):
        assert where in err


@pytest.mark.parametrize(("text", "where", "fragment"), [
    ("", "(top level): line 1", "empty"),
    ("- a\n- b\n", "(top level): line 1", "must be a mapping"),
    (POINT.replace("interleave: false", "interleave: true"), "fusion: line 5", "equal grids"),
    (POINT.replace("  dinov2: {source: tiny-dinov2, tokens: 64}\n", "")
     .replace("{kind: sequence_concat, interleave: false}", "{kind: gated_injection}"),
     "fusion.kind: line 4", "needs at least 2 experts"),
    (POINT.replace("tokens: 16}", "tokens: 16, foo: 1}"), "experts.clip.foo: line 3", "unknown key"),
], ids=["empty-file", "top-level-list", "interleave-unequal-grids", "mr-adapter-one-expert",
        "point-unknown-key"])
def test_malformed_whole_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                               where: str, fragment: str) -> None:
    code, out, err = run_cli(["check", str(write(tmp_path, text))], capsys)
    assert code == 2
    assert "Traceback" not in err + out
    assert any(line.strip().startswith(where) and fragment in line for line in err.splitlines()), err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["check", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2
    assert "no such file" in err
