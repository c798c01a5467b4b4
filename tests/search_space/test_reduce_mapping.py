"""CONTRACT.md's mapping form of an expert's `reduce:` ({kind: unshuffle, factor: R},
{kind: resize, grid: G}, {kind: pool, grid: G}), torch-free: point and space forms, the messages
of bad mappings, hashes, and the cost / resource model equal to the equivalent name form."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from search_space import (
    InvalidDesign,
    SpaceError,
    TrialConfig,
    UnknownGeometry,
    compile_space,
    parse,
    point_cost,
)
from search_space.checks import check
from search_space.cost import expert_grid, fusion_plan, layer_shapes, space_cost_range
from search_space.point import ExpertConfig
from search_space.presets import expert_info
from search_space.reductions import PoolTo, UnshuffleBy
from search_space.resources.estimate import estimate
from search_space.sampling import RandomDraw
from search_space.seed_points import ReplayDraw, point_parameters

SAM = "facebook/sam-vit-base"  # its neck: 64x64, 256 channels


def sam(**fields: object) -> ExpertConfig:
    return ExpertConfig(source=SAM, layers="neck", **fields)


def point(experts: dict, kind: str = "sequence_concat") -> TrialConfig:
    return TrialConfig.model_validate({"experts": experts, "fusion": {"kind": kind}})


# ---- the point form ---------------------------------------------------------------------------

def test_a_mapping_is_a_reduction_with_its_own_target() -> None:
    cfg = sam(reduce={"kind": "unshuffle", "factor": 4})
    assert cfg.reduce == UnshuffleBy(factor=4) and cfg.tokens is None
    assert cfg.reduces and cfg.reduce_name == "unshuffle"
    assert cfg.resolved([(64, 64)]) == sam(tokens=256, reduce="unshuffle")
    assert sam(reduce={"kind": "pool", "grid": 12}).resolved(None) == sam(tokens=144, reduce="pool")
    assert sam(reduce="resize").resolved(None) == sam(reduce="resize")  # a name is its own
    assert not sam(reduce="resize").reduces


def test_cost_model_equals_the_name_form_on_sams_neck() -> None:
    """{kind: unshuffle, factor: 4} on SAM's 64x64 neck == tokens: 256, reduce: unshuffle (LEO)."""
    mapping, name = sam(reduce={"kind": "unshuffle", "factor": 4}), sam(tokens=256, reduce="unshuffle")
    info = expert_info(SAM)
    assert layer_shapes(mapping, info) == layer_shapes(name, info) == [((16, 16), 256 * 16)]
    assert expert_grid(mapping) == expert_grid(name) == (16, 16)
    for kind in ("sequence_concat", "channel_concat", "resampler"):
        a = point({"clip": {"source": "tiny-clip"}, "sam": mapping.model_dump()}, kind)
        b = point({"clip": {"source": "tiny-clip"}, "sam": name.model_dump()}, kind)
        assert point_cost(a) == point_cost(b)
    a = point({"sam": mapping.model_dump()})
    b = point({"sam": name.model_dump()})
    assert point_cost(a).visual_tokens == 256
    ea, eb = estimate(a, "a100-80g"), estimate(b, "a100-80g")
    assert ea.metrics() == eb.metrics() and ea.parts == eb.parts


@pytest.mark.parametrize(("mapping", "name"), [
    ({"kind": "resize", "grid": 24}, {"tokens": 576, "reduce": "resize"}),
    ({"kind": "pool", "grid": 8}, {"tokens": 64, "reduce": "pool"}),
    ({"kind": "unshuffle", "factor": 2}, {"tokens": 1024, "reduce": "unshuffle"}),
])
def test_every_kind_equals_its_name_form(mapping: dict, name: dict) -> None:
    info = expert_info(SAM)
    assert layer_shapes(sam(reduce=mapping), info) == layer_shapes(sam(**name), info)
    assert sam(reduce=mapping, tokens=name["tokens"]).resolved([(64, 64)]) == sam(**name)


@pytest.mark.parametrize("kind", ["mr_adapter", "cross_attention"])
def test_an_injection_primary_reduces_the_fused_group_by_its_mapping(kind: str) -> None:
    def two(clip: dict) -> TrialConfig:
        return point({"clip": {"source": "tiny-clip", **clip},
                      "sam": {"source": "tiny-sam", "layers": "neck"}}, kind)

    mapping, name = two({"reduce": {"kind": "resize", "grid": 4}}), two({"tokens": 16, "reduce": "resize"})
    assert fusion_plan(mapping).after == fusion_plan(name).after == name.experts["clip"]
    assert fusion_plan(mapping).experts == fusion_plan(name).experts  # both at full resolution
    assert point_cost(mapping) == point_cost(name) and point_cost(mapping).groups == ((4, 4),)
    with pytest.raises(InvalidDesign, match=r"reduce: \{kind: unshuffle, factor: 3\} would widen"):
        point_cost(two({"reduce": {"kind": "unshuffle", "factor": 3}}))


# ---- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "message"), [
    ({"kind": "unshuffle", "grid": 4}, "reduce {kind: unshuffle} takes factor; got grid: write e.g. "
                                       "{kind: unshuffle, factor: 2}"),
    ({"kind": "resize"}, "reduce {kind: resize} takes grid: write e.g. {kind: resize, grid: 24}"),
    ({"kind": "pool", "grid": 4, "tokens": 16}, "reduce {kind: pool} takes grid; got tokens"),
    ({"kind": "unshufle", "factor": 2}, "did you mean 'unshuffle'?"),
    ({"factor": 2}, "a reduce mapping needs its `kind` (pool, resize, unshuffle)"),
    (4, "reduce is a name (pool, resize, unshuffle; the target from `tokens`) or a mapping"),
    ("unshufle", "did you mean 'unshuffle'?"),
])
def test_a_bad_reduce_gets_one_message_naming_the_fix(value: object, message: str) -> None:
    text = f"name: p\nexperts:\n  sam: {{source: tiny-sam, layers: neck, reduce: {_flow(value)}}}\n"
    with pytest.raises(SpaceError) as raised:
        parse(text)
    (problem,) = raised.value.problems
    assert problem.path[:3] == ("experts", "sam", "reduce") and message in problem.message


def _flow(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)


def test_tokens_beside_a_mapping_must_agree() -> None:
    assert sam(tokens=144, reduce={"kind": "pool", "grid": 12}).tokens == 144
    with pytest.raises(ValidationError, match=r"tokens: 16 disagrees with reduce \{kind: pool, grid: 12\}, "
                                              r"which gives 144 tokens \(12x12\); drop tokens"):
        sam(tokens=16, reduce={"kind": "pool", "grid": 12})
    text = "name: p\nexperts:\n  sam: {source: tiny-sam, tokens: 16, reduce: {kind: resize, grid: 3}}\n"
    (found,) = problems(text)  # vlmsearch check
    assert found.startswith("experts.sam.tokens: tokens: 16 disagrees with reduce {kind: resize, grid: 3}")
    space = text.replace("tokens: 16", "tokens: {choices: [9, 16]}").replace("sam:", "pool:\n    sam:")
    found = problems(space)[0]  # a space whose pool holds a disagreeing value
    assert found.startswith("experts.pool.sam.tokens: tokens: 16 disagrees")
    unshuffled = sam(tokens=100, reduce={"kind": "unshuffle", "factor": 4})  # needs the grid
    with pytest.raises(InvalidDesign, match="which gives 256 tokens"):
        expert_grid(unshuffled)


def test_unshuffle_factors_that_do_not_fit() -> None:
    with pytest.raises(InvalidDesign, match="3 does not divide 64; use factor one of 2, 4, 8, 16, 32, 64"):
        expert_grid(sam(reduce={"kind": "unshuffle", "factor": 3}))
    convnext = ExpertConfig(source="tiny-convnext", layers=(1, 2), reduce={"kind": "unshuffle", "factor": 2})
    with pytest.raises(InvalidDesign, match="to different grids"):
        expert_grid(convnext)
    assert expert_grid(convnext.model_copy(update={"reduce": PoolTo(grid=2)})) == (2, 2)


def test_an_unknown_grid_is_known_with_a_mapping_of_its_own_grid() -> None:
    local = "./no-such-expert-dir"
    assert expert_grid(ExpertConfig(source=local, reduce={"kind": "resize", "grid": 5})) == (5, 5)
    with pytest.raises(UnknownGeometry, match=r"reduce \{kind: unshuffle, factor: 2\} gives no known"):
        expert_grid(ExpertConfig(source=local, reduce={"kind": "unshuffle", "factor": 2}))


# ---- hashes -----------------------------------------------------------------------------------

def test_the_name_form_keeps_its_hash_and_a_mapping_is_its_own_design() -> None:
    name = point({"sam": {"source": SAM, "layers": "neck", "tokens": 256, "reduce": "unshuffle"}})
    mapping = point({"sam": {"source": SAM, "layers": "neck", "reduce": {"kind": "unshuffle", "factor": 4}}})
    assert '"reduce":"unshuffle","source":"facebook/sam-vit-base","tokens":256' in name.canonical_json()
    assert '"reduce":{"factor":4,"kind":"unshuffle"}' in mapping.canonical_json()
    assert "tokens" not in mapping.canonical_json()
    assert mapping.config_hash != name.config_hash
    assert mapping.config_hash == "dd077bad50936b5f"  # pinned: the canonical form of a mapping
    spelt = point({"sam": {"source": SAM, "layers": "neck", "tokens": 256,
                           "reduce": {"factor": 4, "kind": "unshuffle"}}})
    assert spelt.config_hash == mapping.config_hash  # tokens beside it (agreeing) is the same design
    assert TrialConfig.model_validate(mapping.to_yaml_data()) == mapping  # reads back


# ---- the space form ---------------------------------------------------------------------------

SPACE = """\
name: s
data: {benchmark: probe, image_size: 64}
experts:
  pool:
    clip:
      source: tiny-clip
      reduce: {choices: [pool, {kind: resize, grid: 24}, {kind: pool, grid: {low: 2, high: 3}}]}
    sam: {source: tiny-sam, layers: neck, reduce: {kind: unshuffle, factor: {choices: [2, 4]}}}
  subset: {min: 2, max: 2}
fusion: {kind: sequence_concat}
"""


def test_each_key_of_a_mapping_is_tunable() -> None:
    compiled = compile_space(parse(SPACE).space)
    assert compiled.size() == 8
    assert {"experts.clip.reduce", "experts.clip.reduce.grid", "experts.sam.reduce.factor"} <= set(
        compiled.free_parameters())
    points = list(compiled.points())
    assert {p.experts["sam"].reduce for p in points} == {UnshuffleBy(factor=2), UnshuffleBy(factor=4)}
    assert {p.experts["clip"].reduce if isinstance(p.experts["clip"].reduce, str) else
            p.experts["clip"].reduce.text() for p in points} == {
        "pool", "{kind: resize, grid: 24}", "{kind: pool, grid: 2}", "{kind: pool, grid: 3}"}
    assert len({p.config_hash for p in points}) == 8
    costs = [point_cost(p).visual_tokens for p in points]
    # clip: 12x12 kept, 24x24 resized, 2x2 / 3x3 pooled; sam's 8x8 neck unshuffled by 2 or 4
    assert set(costs) == {c + s for c in (144, 576, 4, 9) for s in (16, 4)}
    assert space_cost_range(compiled).tokens == (min(costs), max(costs))


def test_a_space_mapping_with_a_bad_key_is_named_where_it_is() -> None:
    text = SPACE.replace("factor: {choices: [2, 4]}", "grid: {choices: [2, 4]}")
    with pytest.raises(SpaceError) as raised:
        parse(text)
    (problem,) = raised.value.problems
    assert problem.path == ("experts", "pool", "sam", "reduce")
    assert problem.message.startswith("reduce {kind: unshuffle} takes factor; got grid")


# ---- vlmsearch check --------------------------------------------------------------------------

POINT = """\
name: p
data: {benchmark: probe, image_size: 96}
experts:
  clip: {source: tiny-clip, reduce: {kind: pool, grid: 4}}
  sam: {source: tiny-sam, layers: neck, reduce: {kind: unshuffle, factor: 2}}
fusion: {kind: cross_attention}
"""


def problems(text: str) -> list[str]:
    return [f"{'.'.join(map(str, p.path))}: {p.message}" for p in check(parse(text).space)]


def test_check_reads_the_mapping() -> None:
    (found,) = problems(POINT)  # a secondary's reduction is not read by cross_attention
    assert found.startswith("experts.sam.reduce: cross_attention reads windows of 'sam' at its full")
    sequence = POINT.replace("cross_attention", "sequence_concat")
    assert problems(sequence) == []
    (found,) = problems(sequence.replace("grid: 4}", "grid: 13}"))
    assert found.startswith("experts.clip.reduce.grid: reduce {kind: pool, grid: 13} (169 tokens) exceeds "
                            "tiny-clip's 12x12 grid")
    assert problems(sequence.replace("{kind: pool, grid: 4}", "{kind: resize, grid: 13}")) == []
    (found,) = problems(sequence.replace("factor: 2}", "factor: 3}"))
    assert found.startswith("experts.sam.reduce: reduce {kind: unshuffle, factor: 3} folds whole 3x3 "
                            "windows of the 8x8 grid into one token, but 3 does not divide 8; use "
                            "factor one of 2, 4, 8")
    (found,) = problems(sequence.replace("factor: 2}", "factor: 2}, tokens: 9"))
    assert found.startswith("experts.sam.tokens: tokens: 9 disagrees with reduce {kind: unshuffle, "
                            "factor: 2}, which gives 16 tokens (4x4); drop tokens")
    (found,) = problems(sequence.replace("reduce: {kind: pool, grid: 4}", "reduce: resize"))
    assert found.startswith("experts.clip.reduce: reduce: resize says how the expert reaches `tokens`")
    assert found.endswith("or write it with its own target ({kind: resize, grid: 24})")


@pytest.mark.parametrize(("clip", "label"), [
    ({"grid": 24, "kind": "resize"}, '{"kind": "resize", "grid": 24}'),  # its value (any key order)
    ({"kind": "pool", "grid": 3}, None),                                  # its kind: the range's choice
    ("pool", "pool"),
])
def test_a_seed_point_with_a_mapping_replays_its_choice(clip: object, label: str | None) -> None:
    compiled = compile_space(parse(SPACE).space)
    design = {"experts": {"clip": {"source": "tiny-clip", "reduce": clip},
                          "sam": {"source": "tiny-sam", "layers": "neck",
                                  "reduce": {"kind": "unshuffle", "factor": 4}}}}
    params = point_parameters(compiled, design)
    assert params["experts.sam.reduce.factor"] == 4
    choice = params["experts.clip.reduce"]
    if label is None:  # the choice {kind: pool, grid: {low: 2, high: 3}}
        assert json.loads(choice)["kind"] == "pool" and json.loads(choice)["grid"]["high"] == 3
        assert params["experts.clip.reduce.grid"] == 3
    else:
        assert choice == label
    drawn = compiled.sample(ReplayDraw(params, RandomDraw(1)))
    assert drawn.experts["clip"] == ExpertConfig.model_validate(design["experts"]["clip"])
