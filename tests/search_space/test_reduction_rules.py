"""The reduction rules of the cost model: `reduce:` per expert, SAM's neck, and the injection
fusions' full-resolution secondaries (`search_space.cost.fusion_plan`), torch-free."""

from __future__ import annotations

import pytest

from search_space import InvalidDesign, TrialConfig, compile_space, parse, point_cost
from search_space.checks import check
from search_space.cost import expert_grid, fusion_plan, space_cost_range
from search_space.fusions import FUSIONS
from search_space.point import ExpertConfig

INJECTING = [k for k in FUSIONS.names() if FUSIONS.get(k).injects]


def point(kind: str, primary: dict, secondary: dict, **fusion: object) -> TrialConfig:
    return TrialConfig.model_validate({"experts": {"clip": {"source": "tiny-clip", **primary},
                                                   "sam": {"source": "tiny-sam", **secondary}},
                                       "fusion": {"kind": kind, **fusion}})


def test_injection_kinds() -> None:
    assert INJECTING == ["mr_adapter", "cross_attention", "sva"]
    assert [k for k in INJECTING if FUSIONS.get(k).on_primary] == ["mr_adapter", "cross_attention"]


@pytest.mark.parametrize("kind", ["mr_adapter", "cross_attention"])
def test_the_primarys_reduction_applies_to_the_fused_group(kind: str) -> None:
    """clip (12x12) with tokens 16 and sam's neck (8x8) with tokens 4: sam enters at 8x8, clip at
    12x12, and the fused group is reduced to 4x4."""
    p = point(kind, {"tokens": 16, "reduce": "resize"}, {"layers": "neck", "tokens": 4})
    plan = fusion_plan(p)
    assert [expert_grid(cfg) for _, cfg in plan.experts] == [(12, 12), (8, 8)]
    assert plan.after == p.experts["clip"] and plan.unread == ("sam",)
    assert point_cost(p).groups == ((4, 4),)
    assert point_cost(point(kind, {}, {"tokens": 4})).groups == ((12, 12),)


def test_sva_reads_every_expert_at_full_resolution_and_keeps_its_query_grid() -> None:
    p = point("sva", {"tokens": 16}, {"tokens": 4}, queries=9)
    plan = fusion_plan(p)
    assert plan.after is None and plan.unread == ("clip", "sam")
    assert [expert_grid(cfg) for _, cfg in plan.experts] == [(12, 12), (8, 8)]
    assert point_cost(p).groups == ((3, 3),)


@pytest.mark.parametrize("kind", ["mr_adapter", "cross_attention"])
def test_an_unshuffled_primary_of_an_injection_is_refused(kind: str) -> None:
    with pytest.raises(InvalidDesign, match="use reduce: pool or resize"):
        point_cost(point(kind, {"tokens": 16, "reduce": "unshuffle"}, {}))


def test_other_kinds_read_the_reduced_experts() -> None:
    for kind in ("channel_concat", "sequence_concat", "resampler"):
        plan = fusion_plan(point(kind, {"tokens": 16}, {"tokens": 4}))
        assert plan.after is None and plan.unread == ()
        assert [expert_grid(cfg) for _, cfg in plan.experts] == [(4, 4), (2, 2)]


def test_neck_geometry() -> None:
    neck = ExpertConfig(source="facebook/sam-vit-base", layers="neck")
    assert expert_grid(neck) == (64, 64)
    assert expert_grid(neck.model_copy(update={"tokens": 256, "reduce": "unshuffle"})) == (16, 16)
    with pytest.raises(ValueError, match="Input should be 'neck'"):
        ExpertConfig(source="tiny-sam", layers="necks")


def test_a_new_field_at_its_default_keeps_the_hash() -> None:
    base = point("channel_concat", {"tokens": 16}, {})
    same = point("channel_concat", {"tokens": 16, "reduce": "pool"}, {})
    assert base.config_hash == same.config_hash and "reduce" not in base.canonical_json()
    other = point("channel_concat", {"tokens": 16, "reduce": "resize"}, {})
    assert other.config_hash != base.config_hash and '"reduce":"resize"' in other.canonical_json()


POINT = """\
name: p
data: {benchmark: probe, image_size: 96}
experts:
  clip: {source: tiny-clip, tokens: 16}
  sam: {source: tiny-sam, layers: neck, tokens: 4}
fusion: {kind: cross_attention}
"""


def problems(text: str) -> list[str]:
    return [f"{'.'.join(map(str, p.path))}: {p.message}" for p in check(parse(text).space)]


def test_check_names_a_secondarys_unread_tokens_and_a_reduce_without_tokens() -> None:
    (found,) = problems(POINT)
    assert found.startswith("experts.sam.tokens: cross_attention reads windows of 'sam' at its full "
                            "resolution")
    assert problems(POINT.replace("layers: neck, tokens: 4", "layers: neck")) == []
    (found,) = problems(POINT.replace("layers: neck, tokens: 4", "reduce: resize"))
    assert found.startswith("experts.sam.reduce: reduce: resize says how the expert reaches `tokens`")
    no_neck = POINT.replace("tiny-clip, tokens: 16", "tiny-clip, layers: neck")
    (found,) = problems(no_neck.replace("layers: neck, tokens: 4", "layers: neck"))
    assert found.startswith("experts.clip.layers: layer neck: tiny-clip (clip) has no neck; only SAM "
                            "experts do")


def test_check_names_valid_unshuffle_tokens() -> None:
    text = POINT.replace("fusion: {kind: cross_attention}", "fusion: {kind: sequence_concat}")
    text = text.replace("tokens: 4}", "tokens: 9, reduce: unshuffle}")
    (found,) = problems(text)
    assert "use tokens one of 64, 16, 4, 1" in found


SPACE = """\
name: s
data: {benchmark: probe, image_size: 96}
experts:
  pool:
    clip: {source: tiny-clip, tokens: {choices: [16, 36, 144]}, reduce: {choices: [pool, resize, unshuffle]}}
    sam: {source: tiny-sam, layers: {choices: [neck, -1]}, tokens: {choices: [4, 16]},
          reduce: {choices: [pool, unshuffle]}}
    dinov2: {source: tiny-dinov2, tokens: {choices: [null, 16]}}
  subset: {min: 1, max: 3}
fusion:
  choices:
    - {kind: channel_concat}
    - {kind: sequence_concat, interleave: {choices: [false, true]}}
    - {kind: cross_attention}
    - {kind: mr_adapter}
    - {kind: resampler, queries: 4}
    - {kind: sva, queries: 4}
positions: {choices: [original, share_by_row]}
objectives: [{metric: accuracy, direction: maximize}]
"""


def test_space_cost_range_equals_every_point_with_reductions() -> None:
    compiled = compile_space(parse(SPACE).space)
    costs, invalid = [], 0
    for p in compiled.points():
        try:
            costs.append(point_cost(p))
        except InvalidDesign:
            invalid += 1
    assert len(costs) > 1000 and invalid > 0
    span = space_cost_range(compiled)
    assert span.tokens == (min(c.visual_tokens for c in costs), max(c.visual_tokens for c in costs))
    assert span.positions == (min(c.positions_used for c in costs), max(c.positions_used for c in costs))
