"""The analytic cost model against REFERENCE.md's and CONTRACT.md's worked examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_space import InvalidDesign, compile_space, parse, point_cost, position_ids
from search_space.components import POSITIONS
from search_space.cost import space_cost_range
from search_space.fusions import FUSIONS


def test_reference_worked_example_position_ids() -> None:
    # text at positions 0-1, then group A (2x3), group B (2x2), then text
    groups = [(2, 3), (2, 2)]
    expected = {
        "original": ([[[2, 3, 4], [5, 6, 7]], [[8, 9], [10, 11]]], 12),
        "share_all": ([[[2, 2, 2], [2, 2, 2]], [[3, 3], [3, 3]]], 4),
        "share_by_row": ([[[2, 2, 2], [3, 3, 3]], [[4, 4], [5, 5]]], 6),
        "share_by_row_col": ([[[2, 3, 4], [3, 4, 5]], [[6, 7], [7, 8]]], 9),
    }
    assert set(expected) == set(POSITIONS.names())
    for scheme, (ids, text_start) in expected.items():
        assert position_ids(groups, scheme, p0=2) == (ids, text_start), scheme


def test_contract_comm_point(examples_dir: Path) -> None:
    text = (examples_dir / "comm_point.yaml").read_text()
    point = compile_space(parse(text).space).only_point()
    cost = point_cost(point)
    assert (cost.visual_tokens, cost.positions_used) == (80, 12)
    channel = text.replace("fusion: {kind: sequence_concat, interleave: false}",
                           "fusion: {kind: channel_concat, grid: null}")
    cost = point_cost(compile_space(parse(channel).space).only_point())
    assert cost.groups == ((4, 4),) and cost.visual_tokens == 16


TWO = """\
name: c
experts:
  clip: {source: tiny-clip, tokens: 16}
  dinov2: {source: tiny-dinov2, tokens: 64}
  sam: {source: tiny-sam}
fusion: FUSION
positions: POSITIONS
"""
# clip 4x4, dinov2 8x8, sam 8x8 (128 px / 16): groups per fusion kind, primary (clip) first
GROUPS = {
    "{kind: channel_concat}": [(4, 4)],
    "{kind: channel_concat, grid: 6}": [(6, 6)],
    "{kind: sequence_concat}": [(4, 4), (8, 8), (8, 8)],
    "{kind: gated_injection}": [(4, 4)],
    "{kind: mr_adapter}": [(4, 4)],
    "{kind: cross_attention, heads: 2}": [(4, 4)],
    "{kind: resampler, queries: 9}": [(3, 3)] * 3,
    "{kind: resampler, queries: 6}": [(1, 6)] * 3,
    "{kind: sva, queries: 16}": [(4, 4)],
}
USED = {"original": lambda h, w: h * w, "share_all": lambda h, w: 1,
        "share_by_row": lambda h, w: h, "share_by_row_col": lambda h, w: h + w - 1}


@pytest.mark.parametrize("fusion", list(GROUPS))
@pytest.mark.parametrize("positions", list(USED))
def test_every_fusion_and_scheme(fusion: str, positions: str) -> None:
    text = TWO.replace("FUSION", fusion).replace("POSITIONS", positions)
    cost = point_cost(compile_space(parse(text).space).only_point())
    groups = GROUPS[fusion]
    assert list(cost.groups) == groups
    assert cost.visual_tokens == sum(h * w for h, w in groups)
    assert cost.positions_used == sum(USED[positions](h, w) for h, w in groups)


def test_every_fusion_kind_is_covered() -> None:
    kinds = {spec.split(",")[0].split(": ")[1].rstrip("}") for spec in GROUPS}
    assert kinds == set(FUSIONS.names())


def test_interleave_joins_equal_grids_and_refuses_unequal() -> None:
    text = TWO.replace("  sam: {source: tiny-sam}\n", "").replace("POSITIONS", "share_by_row")
    equal = text.replace("tokens: 64", "tokens: 16").replace("FUSION",
                                                             "{kind: sequence_concat, interleave: true}")
    cost = point_cost(compile_space(parse(equal).space).only_point())
    assert cost.groups == ((4, 8),) and cost.visual_tokens == 32 and cost.positions_used == 4
    unequal = text.replace("FUSION", "{kind: sequence_concat, interleave: true}")
    with pytest.raises(InvalidDesign, match="equal grids"):
        point_cost(compile_space(parse(unequal).space).only_point())


def test_native_grids_and_layer_merges() -> None:
    text = TWO.replace("FUSION", "{kind: sequence_concat}").replace("POSITIONS", "original")
    text = text.replace("{source: tiny-clip, tokens: 16}", "{source: tiny-convnext, layers: [-1, -2]}")
    text = text.replace("{source: tiny-dinov2, tokens: 64}", "{source: tiny-dinov2, image_size: 224}")
    cost = point_cost(compile_space(parse(text).space).only_point())
    # convnext layers -1 (3x3 @96) and -2 (6x6) merge at the smaller grid; dinov2 224/14 = 16
    assert cost.groups == ((3, 3), (16, 16), (8, 8))


def test_space_cost_range(examples_dir: Path) -> None:
    space = compile_space(parse((examples_dir / "comm_point.yaml").read_text()).space)
    span = space_cost_range(space)
    assert span.tokens == (80, 80) and span.positions == (12, 12) and span.complete
    # its skill experts are folders beside the YAML: their geometry is read from their config.json
    quick = compile_space(parse((examples_dir / "quickstart.yaml").read_text(), base=examples_dir).space)
    span = space_cost_range(quick)
    # fewest: 4 (colour alone, a 2x2 grid); most: three experts through a 36-query resampler each
    assert span.tokens == (4, 108)
    assert span.positions == (1, 108)


ORDER_SPACE = """\
name: order
data: {benchmark: probe, train_size: 64, eval_size: 32, image_size: 96, seed: 0}
language_model: {source: tiny-llama, train: full}
experts:
  pool:
    clip: {source: tiny-clip, tokens: {choices: [4, 16, 64]}}
    dinov2: {source: tiny-dinov2, tokens: {choices: [16, 36]}, primary: true}
    sam: {source: tiny-sam, tokens: {choices: [9, 16]}}
    mae: {source: tiny-mae, tokens: 16}
  subset: {min: 1, max: 4}
fusion:
  choices:
    - {kind: channel_concat}
    - {kind: sequence_concat, interleave: {choices: [false, true]}}
    - {kind: cross_attention}
    - {kind: resampler, queries: {choices: [4, 9]}}
    - {kind: sva, queries: 16}
    - {kind: gated_injection}
positions: {choices: [original, share_by_row, share_all]}
train: {steps: 4, batch_size: 2, lr: 1.0e-3}
objectives: [{metric: accuracy, direction: maximize}]
"""


def test_space_cost_range_equals_every_point() -> None:
    """The range is enumerated over grid multisets (primary first); it must equal the range
    over every point of the space, each in its own expert order."""
    compiled = compile_space(parse(ORDER_SPACE).space)
    costs = []
    for point in compiled.points():
        try:
            costs.append(point_cost(point))
        except InvalidDesign:
            continue
    assert len(costs) > 1000
    span = space_cost_range(compiled)
    assert span.tokens == (min(c.visual_tokens for c in costs), max(c.visual_tokens for c in costs))
    assert span.positions == (min(c.positions_used for c in costs), max(c.positions_used for c in costs))


@pytest.mark.parametrize("kind", sorted(FUSIONS.names()))
def test_fusion_cost_ignores_the_order_of_the_secondary_experts(kind: str) -> None:
    """What space_cost_range relies on: after the first (primary) grid, order does not matter."""
    import itertools

    entry = FUSIONS.get(kind)
    params = entry.params()
    grids = [(2, 2), (4, 4), (3, 3), (4, 4)]
    costs = set()
    for rest in itertools.permutations(grids[1:]):
        try:
            groups = entry.groups(params, [grids[0], *rest])
        except InvalidDesign:
            costs.add("invalid")
            continue
        costs.add((sum(h * w for h, w in groups), tuple(sorted(groups))))
    assert len(costs) == 1, costs
