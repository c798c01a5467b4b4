"""Conditional sampling, subsets, enumeration of finite spaces."""

from __future__ import annotations

import itertools

import optuna
import pytest

from search_space import OptunaDraw, RandomDraw, TrialConfig, compile_space, parse
from search_space.sampling import valid_subsets

SPACE = """\
name: s
experts:
  pool:
    clip: {source: tiny-clip, layers: {choices: [-1, -2]}, tokens: {choices: [16, 64]}}
    dinov2: {source: tiny-dinov2, tokens: {choices: [16, 64]}}
    sam: {source: tiny-sam, tokens: 16, merge: {choices: [mean, concat]}}
    mae: {source: tiny-mae, tokens: {low: 1, high: 3}}
  subset: {min: 1, max: 3, forbid_together: [[sam, mae]]}
fusion:
  choices:
    - {kind: channel_concat, grid: {choices: [null, 2]}}
    - {kind: cross_attention, heads: {choices: [1, 2]}}
    - {kind: gated_injection}
    - {kind: resampler, queries: {choices: [4, 9]}, depth: {low: 1, high: 2}}
    - {kind: sva, queries: 4, depth: {low: 1, high: 3}}
projector: {choices: [linear, mlp2x_gelu]}
positions: {choices: [original, share_all]}
train: {lr: {low: 1.0e-4, high: 1.0e-2, log: true}}
objectives: [{metric: accuracy, direction: maximize}, {metric: visual_tokens, direction: minimize}]
"""


def compiled(text: str = SPACE):
    return compile_space(parse(text).space)


def allowed(params: dict, point: TrialConfig) -> None:
    """Every drawn parameter belongs to a chosen expert or to the chosen fusion kind."""
    chosen = set(point.experts)
    for name in params:
        parts = name.split(".")
        if parts[0] == "experts" and len(parts) > 1:
            assert parts[1] in chosen, f"{name} drawn but {parts[1]} not chosen"
        if parts[0] == "fusion" and len(parts) > 2:
            assert parts[1] == point.fusion.kind, f"{name} drawn for fusion {point.fusion.kind}"


SPACE_SQUARE = SPACE.replace("tokens: {low: 1, high: 3}", "tokens: {choices: [1, 4, 9]}")


@pytest.mark.parametrize(("sampler", "n_trials"), [
    (optuna.samplers.TPESampler(seed=0, n_startup_trials=10), 60),
    (optuna.samplers.RandomSampler(seed=1), 60),
    (optuna.samplers.NSGAIISampler(seed=2, population_size=8), 60),
    (optuna.samplers.GPSampler(seed=3, n_startup_trials=8), 20),  # GP fits are slow on 2 cores
], ids=["tpe", "random", "nsga2", "gp"])
def test_optuna_samples_only_chosen_branches(sampler: optuna.samplers.BaseSampler,
                                             n_trials: int) -> None:
    space = compiled(SPACE_SQUARE)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    kinds, subsets = set(), set()

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        point = space.sample(OptunaDraw(trial))
        allowed(trial.params, point)
        assert not ({"sam", "mae"} <= set(point.experts))
        if len(point.experts) == 1:
            assert point.fusion.kind not in ("cross_attention", "gated_injection", "mr_adapter")
        kinds.add(point.fusion.kind)
        subsets.add(tuple(point.experts))
        return float(len(point.experts)), float(trial.params.get("train.lr", 0))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=n_trials)
    assert len(kinds) >= 3 and len(subsets) >= 4


def test_random_draws_cover_and_respect_branches() -> None:
    space = compiled(SPACE_SQUARE)
    seen_subsets = set()
    for seed in range(300):
        draw = RandomDraw(seed)
        point = space.sample(draw)
        allowed(draw.params, point)
        seen_subsets.add(tuple(point.experts))
        assert 1e-4 <= point.train.lr <= 1e-2
    assert seen_subsets == set(space.subsets)


def test_random_is_deterministic_under_seed() -> None:
    space = compiled(SPACE_SQUARE)
    a = [space.sample(RandomDraw(7)).config_hash for _ in range(3)]
    assert len(set(a)) == 1
    many = {space.sample(RandomDraw(s)).config_hash for s in range(50)}
    assert len(many) > 40


def test_subsets_respect_bounds() -> None:
    subsets = valid_subsets(parse(SPACE).space)
    pool = ["clip", "dinov2", "sam", "mae"]
    expected = [c for n in (1, 2, 3) for c in itertools.combinations(pool, n)
                if not {"sam", "mae"} <= set(c)]
    assert subsets == expected


FINITE = """\
name: f
experts:
  pool:
    clip: {source: tiny-clip, tokens: {choices: [16, 64]}}
    dinov2: {source: tiny-dinov2, tokens: 16}
  subset: {min: 1, max: 2}
fusion:
  choices:
    - {kind: channel_concat}
    - {kind: gated_injection}
    - {kind: resampler, queries: {low: 4, high: 8, step: 4}}
positions: {choices: [original, share_all]}
train: {lr: {low: 0.001, high: 0.003, step: 0.001}}
objectives: [{metric: accuracy, direction: maximize}]
search: {sampler: grid}
"""


def test_finite_space_enumerates_its_size() -> None:
    space = compiled(FINITE)
    points = list(space.points())
    # subsets: {clip}: 2 tokens x (cc + rs*2) = 6; {dinov2}: 1 x 3 = 3; {clip,dinov2}: 2 x 4 = 8
    # each x 2 positions x 3 lr values
    assert space.size() == (6 + 3 + 8) * 2 * 3 == len(points)
    assert len({p.config_hash for p in points}) == len(points)
    assert {p.train.lr for p in points} == {0.001, 0.002, 0.003}


def test_unbounded_space_has_no_size() -> None:
    assert compiled().size() is None
    with pytest.raises(ValueError, match="continuous"):
        list(compiled().points())


def test_point_file_has_no_free_parameters(examples_dir) -> None:
    space = compile_space(parse((examples_dir / "comm_point.yaml").read_text()).space)
    assert space.free_parameters() == []
    assert space.size() == 1
    point = space.only_point()
    assert list(point.experts) == ["clip", "dinov2"]
    assert point.experts["clip"].layers == (-1, -2, -3)
