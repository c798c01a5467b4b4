"""Canonical JSON, the config hash, and YAML round trips."""

from __future__ import annotations

from pathlib import Path

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


def test_point_round_trips_through_yaml(tmp_path: Path, examples_dir: Path) -> None:
    space = compile_space(parse((examples_dir / "quickstart.yaml").read_text()).space)
    for seed in range(40):
        point = space.sample(RandomDraw(seed))
        text = dump_yaml(point.to_yaml_data())
        again = point_of(text)
        assert again == point
        assert again.config_hash == point.config_hash
        assert dump_yaml(again.to_yaml_data()) == text
