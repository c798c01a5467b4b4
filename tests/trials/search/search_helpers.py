"""A search spec from YAML text, shared by the search tests of both backends."""

from __future__ import annotations

from pathlib import Path

from search_space import parse
from trials.search.study import SearchSpec

# A small two-objective space with a constraint and MO-ASHA: seconds per trial on a CPU.
SMALL_SPACE = """\
name: small
data: {benchmark: probe, train_size: 96, eval_size: 36, image_size: 64, seed: 0}
experts:
  pool:
    clip: {source: tiny-clip, tokens: {choices: [4, 16]}}
    dinov2: {source: tiny-dinov2, tokens: 16}
  subset: {min: 1, max: 2}
fusion:
  choices:
    - {kind: channel_concat}
    - {kind: sequence_concat}
positions: {choices: [original, share_all]}
train: {steps: 12, batch_size: 16, lr: {low: 1.0e-3, high: 3.0e-3, log: true}}
objectives:
  - {metric: accuracy, direction: maximize}
  - {metric: visual_tokens, direction: minimize}
constraints:
  - {metric: visual_tokens, max: 24}
search: {trials: 8, concurrency: 2, seed: 1,
         early_stopping: {kind: mo_asha, min_steps: 4, reduction_factor: 3}}
"""


def make_spec(tmp_path: Path, text: str, **changes: object) -> SearchSpec:
    space = parse(text).space
    base = {"study": space.name, "space": space, "space_yaml": text, "trials": space.search.trials,
            "concurrency": space.search.concurrency, "storage": f"sqlite:///{tmp_path}/study.db",
            "run_dir": tmp_path}
    return SearchSpec(**{**base, **changes})


# Two objectives with a constraint, MO-ASHA and a seed point that cannot be built (it interleaves
# unequal grids); BACKEND is each backend's name (the contract suite, the Ray tests).
MO_ASHA_SPACE = """\
name: contract
data: {benchmark: probe, train_size: 96, eval_size: 36, image_size: 64, seed: 0}
experts:
  pool:
    clip: {source: tiny-clip, tokens: {choices: [4, 16]}}
    dinov2: {source: tiny-dinov2, tokens: 16}
  subset: {min: 1, max: 2}
fusion:
  choices:
    - {kind: channel_concat}
    - {kind: sequence_concat, interleave: {choices: [false, true]}}
positions: {choices: [original, share_all]}
train: {steps: 12, batch_size: 16, lr: {low: 1.0e-3, high: 3.0e-3, log: true}}
objectives:
  - {metric: accuracy, direction: maximize}
  - {metric: visual_tokens, direction: minimize}
constraints:
  - {metric: visual_tokens, max: 24}
search: {backend: BACKEND, trials: 6, concurrency: 2, seed: 1,
         seed_points: [{experts: {clip: {source: tiny-clip, tokens: 4},
                                  dinov2: {source: tiny-dinov2, tokens: 16}},
                        fusion: {kind: sequence_concat, interleave: true}}],
         early_stopping: {kind: mo_asha, min_steps: 4, reduction_factor: 3}}
"""
