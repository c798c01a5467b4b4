"""A per-expert `projector` (issue 16, item 2; COMM: a 2-layer MLP for DINOv2, linear for CLIP):
a mapping from expert name to projector, on a point and in a space (each value tunable), sampled
only for the experts a subset holds; one name still means every expert, with the same hash."""

from __future__ import annotations

import pytest

from search_space import compile_space, parse, point_cost
from search_space.errors import InvalidDesign, SpaceError
from search_space.point import TrialConfig
from search_space.sampling import RandomDraw
from search_space.seed_points import point_parameters

EXPERTS = {"clip": {"source": "tiny-clip"}, "dinov2": {"source": "tiny-dinov2", "primary": True}}


def point(projector: object, fusion: str = "sequence_concat") -> TrialConfig:
    return TrialConfig.model_validate({"experts": EXPERTS, "fusion": {"kind": fusion},
                                       "projector": projector})


def test_a_mapping_gives_each_expert_its_projector_in_fusion_order() -> None:
    p = point({"clip": "linear", "dinov2": "mlp2x_gelu"})
    assert p.expert_projectors() == ("mlp2x_gelu", "linear")  # dinov2 is the primary: first
    assert p.fusion_projector() == ("mlp2x_gelu", "linear")
    assert point("linear").fusion_projector() == ("linear", "linear")
    assert point("linear", "channel_concat").fusion_projector() == "linear"


def test_one_name_keeps_its_hash_and_a_mapping_hashes_by_content() -> None:
    same = point({"dinov2": "mlp2x_gelu", "clip": "linear"}).config_hash
    assert point({"clip": "linear", "dinov2": "mlp2x_gelu"}).config_hash == same
    assert point("linear").canonical()["projector"] == "linear"
    assert point("linear").config_hash != same


@pytest.mark.parametrize(("mapping", "message"), [
    ({"clip": "linear"}, "gives no projector for dinov2"),
    ({"clip": "linear", "dinov2": "linear", "sam": "linear"}, "names sam, which is not an expert"),
    ({"clip": "linear", "dinov2": "mlp3x"}, "mlp2x_gelu"),  # did you mean
])
def test_a_mapping_must_name_every_expert_and_only_them(mapping: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        point(mapping)


@pytest.mark.parametrize("kind", ["channel_concat", "cross_attention", "gated_injection", "mr_adapter",
                                  "sva"])
def test_an_operator_with_one_shared_projector_refuses_two(kind: str) -> None:
    p = point({"clip": "linear", "dinov2": "mlp2x_gelu"}, kind)
    with pytest.raises(InvalidDesign, match=r"one shared projector.*sequence_concat, resampler"):
        point_cost(p)
    same = point({"clip": "linear", "dinov2": "linear"}, kind)  # one projector, written per expert
    assert same.fusion_projector() == "linear"


SPACE = """\
name: s
experts:
  pool:
    clip: {source: tiny-clip}
    dinov2: {source: tiny-dinov2}
    siglip: {source: tiny-siglip}
  subset: {min: 1, max: 2}
fusion: {kind: sequence_concat}
projector:
  clip: linear
  dinov2: {choices: [linear, mlp2x_gelu]}
  siglip: {choices: [mlp2x_gelu, ln_mlp2x_gelu]}
"""


def test_a_space_samples_a_projector_only_for_the_chosen_experts() -> None:
    compiled = compile_space(parse(SPACE).space)
    seen = set()
    for seed in range(40):
        draw = RandomDraw(seed)
        p = compiled.sample(draw)
        assert set(p.projector) == set(p.experts)
        asked = {name.split(".", 1)[1] for name in draw.params if name.startswith("projector.")}
        assert asked == {"dinov2", "siglip"} & set(p.experts)  # clip's is fixed
        seen.add((tuple(p.experts), tuple(sorted(p.projector.items()))))
    assert (("dinov2", "siglip"), (("dinov2", "mlp2x_gelu"), ("siglip", "ln_mlp2x_gelu"))) in seen
    # 3 single experts (1 + 2 + 2 designs) and 3 pairs (2 + 2 + 4): every design is reachable
    assert compiled.size() == 5 + 8 == len(seen)


def test_a_seed_point_with_a_mapping_replays() -> None:
    compiled = compile_space(parse(SPACE).space)
    design = {"experts": {"dinov2": {"source": "tiny-dinov2"}}, "projector": {"dinov2": "mlp2x_gelu"}}
    params = point_parameters(compiled, design)
    assert params["projector.dinov2"] == "mlp2x_gelu"


def test_a_space_mapping_must_cover_the_pool() -> None:
    bad = SPACE.replace("  clip: linear\n", "")
    with pytest.raises(SpaceError, match=r"projector.*gives no projector for clip"):
        parse(bad)
    with pytest.raises(SpaceError, match="names sam, which is not in the pool"):
        parse(SPACE + "  sam: linear\n")


def test_a_choice_between_one_projector_and_a_mapping() -> None:
    text = SPACE.split("projector:")[0] + (
        "projector: {choices: [linear, {clip: linear, dinov2: mlp2x_gelu, siglip: linear}]}\n")
    compiled = compile_space(parse(text).space)
    shapes = {type(compiled.sample(RandomDraw(s)).projector).__name__ for s in range(20)}
    assert shapes == {"str", "dict"}
    for p in compiled.points():
        if isinstance(p.projector, dict):
            assert set(p.projector) == set(p.experts)
