"""The committed skill experts (examples/experts) have the skills we say, are small, and the
script that trained them is deterministic.

Measured on the committed weights (linear probe: LogisticRegression on mean-pooled last-layer
tokens; probe seed 5, 64 px, 300 questions per skill each side; chance: color/shape 0.17,
small_text 0.10) -- see docs/BENCHMARKS.md, "Skill experts":
  colour: color 1.000, shape 0.737, small_text 0.097
  shape:  color 0.563, shape 1.000, small_text 0.320
  reader: color 0.460, shape 0.450, small_text 0.940
(`python -m trials.data.skill_experts --measure`.) The colour expert is the least blind (shape
0.737 by a linear probe at 16 px); each own skill still leads the others' by >= 0.26.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import EXAMPLES
from trials.data.skill_experts import SPECS, skill_scores, train

FOLDER = EXAMPLES / "experts"
OWN = 0.85     # each expert on its own skill, at least
MARGIN = 0.25  # its own skill above either other expert's score on that skill, at least


@pytest.fixture(scope="module")
def scores() -> dict[str, dict[str, float]]:
    return {name: skill_scores(str(FOLDER / name)) for name in SPECS}


@pytest.mark.slow
def test_each_expert_has_its_skill_and_the_others_clearly_less(scores: dict[str, dict[str, float]]) -> None:
    for name, spec in SPECS.items():
        own = scores[name][spec.skill]
        assert own >= OWN, (name, scores)
        for other in SPECS:
            if other != name:
                assert scores[other][spec.skill] <= own - MARGIN, (name, other, scores)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_committed_experts_are_small_and_complete(name: str) -> None:
    folder = FOLDER / name
    for file in ("config.json", "model.safetensors", "preprocessor_config.json", "training.json"):
        assert (folder / file).is_file(), file
    assert (folder / "model.safetensors").stat().st_size < 2_000_000


def test_training_is_deterministic() -> None:
    a, b = (train(SPECS["colour"], steps=2, batch=8).state_dict() for _ in range(2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = train(SPECS["colour"], steps=3, batch=8).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)
