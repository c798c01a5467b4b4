"""The YAML loader: merge keys as YAML defines them; alias bombs and deep nesting refused quickly,
with a line, not expanded (issue 19, classes 1 and 9)."""

from __future__ import annotations

import tracemalloc

import pytest

from search_space.errors import SpaceError
from search_space.yaml_io import load_yaml

MERGED = """\
base: &base {steps: 40, batch_size: 8, lr: 1.0e-3}
train:
  <<: *base
  steps: 80
many:
  <<: [*base, {seed: 3}]
"""


def test_merge_keys_merge_and_the_mappings_own_keys_win() -> None:
    data, lines = load_yaml(MERGED)
    assert data["train"] == {"steps": 80, "batch_size": 8, "lr": 1.0e-3}
    assert data["many"] == {"steps": 40, "batch_size": 8, "lr": 1.0e-3, "seed": 3}
    assert data["base"]["steps"] == 40 and lines[("train", "steps")] == 4


def test_a_key_written_twice_is_still_a_duplicate() -> None:
    with pytest.raises(SpaceError, match="duplicate key 'steps'"):
        load_yaml("train:\n  <<: {lr: 1}\n  steps: 1\n  steps: 2\n")


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    tracemalloc.start()
    try:
        with pytest.raises(SpaceError, match="expands to more than 100,000 values"):
            load_yaml("\n".join(bomb) + "\n")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20  # refused before it expands (it took 2.4 GB before the limit)


@pytest.mark.parametrize("text", ["[" * 100 + "]" * 100, "[" * 5000 + "]" * 5000,
                                  "".join(f"{' ' * i}k{i}:\n" for i in range(80)) + " " * 80 + "x: 1\n"])
def test_deep_nesting_is_refused_with_a_message(text: str) -> None:
    with pytest.raises(SpaceError, match="nests"):
        load_yaml(text)
