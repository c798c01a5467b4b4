"""Canonical JSON, the config hash, and YAML round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_space import compile_space, parse
from search_space.sampling import RandomDraw
from search_space.yaml_io import dump_yaml

POINT = """\
name: p
experts:
  clip: {source: tiny-clip, layers: [-1, -2], merge: mean, tokens: 16}
  dinov2: {source: tiny-dinov2, tokens: 64}
fusion: {kind: cross_attention, heads: 2}
positions: share_by_row
train: {steps: 30, lr: 1.0e-3, batch_size: 8}
"""

REORDERED = """\
train: {batch_size: 8, lr: 0.001, steps: 30}
positions: share_by_row
fusion: {heads: 2, kind: cross_attention}
name: other-name
experts:
  clip: {tokens: 16, merge: mean, layers: [-1, -2], source: tiny-clip}
  dinov2: {tokens: 64, source: tiny-dinov2}
"""


def point_of(text: str):
    return compile_space(parse(text).space).only_point()


def test_hash_ignores_key_order_float_spelling_and_name() -> None:
    a, b = point_of(POINT), point_of(REORDERED)
    assert a.canonical_json() == b.canonical_json()
    assert a.config_hash == b.config_hash
    for spelling in ("1e-3", "0.001", "1.0E-3", ".001"):
        c = point_of(POINT.replace("lr: 1.0e-3", f"lr: {spelling}"))
        assert c.train.lr == 0.001
        assert c.config_hash == a.config_hash, spelling


def test_defaults_written_or_not_hash_alike() -> None:
    explicit = POINT.replace("positions: share_by_row", "positions: share_by_row\nprojector: mlp2x_gelu")
    assert point_of(explicit).config_hash == point_of(POINT).config_hash


def test_hash_distinguishes_points() -> None:
    base = point_of(POINT).config_hash
    for old, new in [("heads: 2", "heads: 1"), ("tokens: 16", "tokens: 4"),
                     ("lr: 1.0e-3", "lr: 2.0e-3"), ("share_by_row", "share_all"),
                     ("merge: mean", "merge: concat"), ("layers: [-1, -2]", "layers: [-2, -1]")]:
        assert point_of(POINT.replace(old, new)).config_hash != base, (old, new)
    swapped = POINT.replace("  clip: {source: tiny-clip, layers: [-1, -2], merge: mean, tokens: 16}\n", "")
    swapped = swapped.replace("  dinov2: {source: tiny-dinov2, tokens: 64}\n",
                              "  dinov2: {source: tiny-dinov2, tokens: 64}\n"
                              "  clip: {source: tiny-clip, layers: [-1, -2], merge: mean, tokens: 16}\n")
    assert point_of(swapped).config_hash != base, "expert order sets the primary expert"


def test_hash_is_stable_across_releases() -> None:
    # A literal: if this changes, every stored study's identities change with it.
    assert point_of(POINT).config_hash == "50e64ed7fadc6079"


# Designs of the examples as drawn before the training recipe's keys (micro_batch,
# gradient_checkpointing, precision, stages, per-part learning rates, experts' train) existed:
# at their defaults those keys stay out of the canonical form, so these hashes stand.
RELEASED_HASHES = {
    "comm": ["7396dd3106943e2b", "e543c6d30145321b", "34172ac784beaec1"],
    "comm_point": ["e1232190313eb730"],
    # eagle.yaml's pool itself changed (full-resolution experts, channel_concat on 32x32; the
    # injection fusions read secondaries at full resolution): new designs, new hashes
    "eagle": ["33cd4e76d681cbe7", "054a96fc04ad0982", "cd942d77f36540a9"],
    "mousi": ["650cebdeeb4d3214", "b878f170b56d539f", "8118781976918d7e"],
    "nasbench201": ["d76b13b673397b71", "add18b78637c3145", "7a9deb560f511b4c"],
    # issue 17: planted.yaml's pool is the skill experts (was 53ba9da45c2c04dd, ...)
    "planted": ["620d39b2852712a1", "217074b9bff4b63e", "26e78b52d2ddfcf0"],
    # issue 16: seed 0 draws the late gated injection, once `mr_adapter`, now `gated_injection`
    # (was 49f65a6e4eea2dd8); seed 1 an sva design: Cambrian's faithful SVA is another operator
    # (was 3bf780258e264882)
    # issue 17: the quickstart's pool is the skill experts (was 3e46849ac103614a, ...)
    "quickstart": ["35fb97ac33231c9e", "4c2f426435466025", "b743f226419e917b"],
}


@pytest.mark.parametrize("name", sorted(RELEASED_HASHES))
def test_examples_keep_their_released_hashes(name: str, examples_dir: Path) -> None:
    space = compile_space(parse((examples_dir / f"{name}.yaml").read_text()).space)
    drawn = [space.sample(RandomDraw(seed)).config_hash for seed in range(len(RELEASED_HASHES[name]))]
    assert drawn == RELEASED_HASHES[name]


def test_recipe_keys_enter_the_hash_only_when_set() -> None:
    base = point_of(POINT)
    assert "micro_batch" not in base.canonical_json() and "stages" not in base.canonical_json()
    for old, new in [("batch_size: 8}", "batch_size: 8, micro_batch: 2}"),
                     ("batch_size: 8}", "batch_size: 8, precision: bf16}"),
                     ("tokens: 64}", "tokens: 64, train: lora}")]:
        changed = point_of(POINT.replace(old, new))
        assert changed.config_hash != base.config_hash, new
    explicit = point_of(POINT.replace("batch_size: 8}", "batch_size: 8, micro_batch: auto, "
                                      "precision: auto, gradient_checkpointing: auto}"))
    assert explicit.config_hash == base.config_hash


def test_point_round_trips_through_yaml(tmp_path: Path, examples_dir: Path) -> None:
    space = compile_space(parse((examples_dir / "quickstart.yaml").read_text()).space)
    for seed in range(40):
        point = space.sample(RandomDraw(seed))
        text = dump_yaml(point.to_yaml_data())
        again = point_of(text)
        assert again == point
        assert again.config_hash == point.config_hash
        assert dump_yaml(again.to_yaml_data()) == text


def test_a_staged_point_round_trips_and_its_steps_are_the_stages_total() -> None:
    staged = POINT.replace("train: {steps: 30, lr: 1.0e-3, batch_size: 8}",
                           "train: {batch_size: 8, stages: [{train: [connector], steps: 10, lr: 1.0e-3},"
                           " {train: [connector, lm], steps: 20, lr: 2.0e-5, connector_lr: 2.0e-5}]}")
    point = point_of(staged)
    assert point.train.steps == 30 and [s.steps for s in point.train.stages] == [10, 20]
    assert "lr" not in point.canonical()["train"]  # the stages' own lrs are the design
    again = point_of(dump_yaml(point.to_yaml_data()))
    assert again == point and again.config_hash == point.config_hash
    scaled = point.train.with_total_steps(6)
    assert scaled.steps == 6 and [s.steps for s in scaled.stages] == [2, 4]


def test_a_resampler_width_enters_the_hash_only_when_set() -> None:
    """Designs written before `width` existed keep their identity; a width makes another design."""
    resampler = POINT.replace(POINT[POINT.index("fusion:"):].splitlines()[0],
                              "fusion: {kind: resampler, queries: 16, heads: 2}")
    base = point_of(resampler)
    assert base.fusion.kind == "resampler" and "width" not in base.canonical_json()
    assert point_of(resampler.replace("heads: 2}", "heads: 2, width: null}")).config_hash == base.config_hash
    assert point_of(resampler.replace("heads: 2}", "heads: 2, width: 32}")).config_hash != base.config_hash


def test_an_experts_merge_grid_enters_the_hash_only_when_largest() -> None:
    """Designs written before `merge_grid` existed keep their identity (smallest was the rule)."""
    base = point_of(POINT)
    assert "merge_grid" not in base.canonical_json()
    smallest = point_of(POINT.replace("tokens: 64}", "tokens: 64, merge_grid: smallest}"))
    assert smallest.config_hash == base.config_hash == "50e64ed7fadc6079"
    largest = point_of(POINT.replace("tokens: 64}", "tokens: 64, merge_grid: largest}"))
    assert largest.config_hash != base.config_hash and '"merge_grid":"largest"' in largest.canonical_json()
