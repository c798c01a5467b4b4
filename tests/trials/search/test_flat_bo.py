"""FlatBO and the `auto` sampler: the hypervolume improvement against a brute-force count, the
objective transform's round trip, the candidate pool, the model `auto` picks for a flat and a
conditional space, and no design drawn twice, even with trials asked before others are told."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search_space import hypervolume, pareto_mask
from trials.search.auto import AutoSampler
from trials.search.flat_bo import FlatBO, _Columns, _hvi, expected_hvi
from trials.search.flat_candidates import Encoder, candidates

optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.mark.parametrize("seed", range(5))
def test_the_improvement_is_the_hypervolume_added(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cloud = rng.uniform(0, 1, (30, 2))
    front, ref = cloud[pareto_mask(cloud)], np.array([1.1, 1.2])
    points = rng.uniform(-0.2, 1.3, (50, 2))
    brute = [hypervolume(np.vstack([front, p]), ref) - hypervolume(front, ref) for p in points]
    np.testing.assert_allclose(_hvi(points, front, ref), brute, atol=1e-12)


def test_one_objective_is_the_improvement_below_the_best() -> None:
    got = _hvi(np.array([[0.1], [0.5], [0.9]]), np.array([[0.4]]), [1.0])
    np.testing.assert_allclose(got, [0.3, 0.0, 0.0])


def test_a_certain_candidate_scores_its_own_improvement() -> None:
    front, ref = np.array([[0.2, 0.8], [0.6, 0.3]]), np.array([1.0, 1.0])
    mean = np.array([[0.1, 0.1], [0.9, 0.9]])
    score = expected_hvi(mean, np.zeros_like(mean), front, ref, np.ones((4, 2)))
    np.testing.assert_allclose(score, _hvi(mean, front, ref))
    assert score[0] > 0 and score[1] == 0
    z = np.random.default_rng(0).normal(size=(64, 2))
    noisy = expected_hvi(mean, np.full_like(mean, 0.5), front, ref, z)
    assert noisy[1] > 0, "an uncertain candidate behind the front may still improve it"


def test_the_transform_keeps_order_and_comes_back() -> None:
    rng = np.random.default_rng(0)
    y = np.stack([-rng.beta(5, 1, 40), np.exp(rng.normal(0, 2, 40))], axis=1)  # -accuracy, a latency
    columns = _Columns(y)
    t = columns.forward(y)
    for j in range(2):
        assert (np.argsort(t[:, j]) == np.argsort(y[:, j])).all()
    assert columns.ratios == [False, True], "the latency spans orders of magnitude: compared in ratios"
    np.testing.assert_allclose(columns.measured(t), columns.measure(y, t), atol=1e-2)
    np.testing.assert_allclose(columns.measure(y, t)[:, 0], (y[:, 0] - columns.mean[0]) / columns.scale[0])
    extreme = columns.measured(np.array([[-50.0, 50.0]]))
    assert np.isfinite(extreme).all(), "a sample far outside the data still maps to a number"


SPACE = {"op": CategoricalDistribution(["a", "b", "c"]), "width": IntDistribution(8, 64, step=8),
         "lr": FloatDistribution(1e-4, 1e-1, log=True)}


def test_candidates_are_untried_and_include_each_one_parameter_change() -> None:
    encoder = Encoder(SPACE)
    front = [{"op": "a", "width": 32, "lr": 1e-3}]
    drawn = {encoder.key(front[0]), encoder.key({"op": "b", "width": 32, "lr": 1e-3})}
    pool = candidates(encoder, front, drawn, 50, np.random.default_rng(0))
    keys = [encoder.key(p) for p in pool]
    assert len(set(keys)) == len(keys) and not set(keys) & drawn
    assert {"op": "c", "width": 32, "lr": 1e-3} in pool
    assert {"op": "a", "width": 24, "lr": 1e-3} in pool and {"op": "a", "width": 48, "lr": 1e-3} in pool
    x = encoder.encode(pool)
    assert x.shape == (len(pool), 3 + 1 + 1) and (x >= 0).all() and (x <= 1).all()


def _two_objectives(trial: optuna.Trial) -> tuple[float, float]:
    a, b = trial.suggest_categorical("a", list(range(6))), trial.suggest_categorical("b", list(range(6)))
    return float((a - 4) ** 2 + b), float(b + (a % 3))  # both minimised


def test_flat_bo_never_draws_a_design_twice_even_when_asked_ahead() -> None:
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=FlatBO(seed=0))
    seen = []
    while len(seen) < 36:  # the whole 6 x 6 grid, three trials running before each round of tells
        asked = []  # (the first alone: before a trial completes, the space is not known yet)
        for _ in range(min(3 if seen else 1, 36 - len(seen))):  # each drawn when asked, as the backends do
            trial = study.ask()
            seen.append((trial.suggest_categorical("a", list(range(6))),
                         trial.suggest_categorical("b", list(range(6)))))
            asked.append(trial)
        for trial in asked:
            a, b = trial.params["a"], trial.params["b"]
            study.tell(trial, [float((a - 4) ** 2 + b), float(b + (a % 3))])
    assert len(set(seen)) == 36


def test_flat_bo_finds_a_one_objective_optimum_sooner_than_random() -> None:
    def found(sampler: optuna.samplers.BaseSampler) -> float:
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: (t.suggest_float("x", -3, 3, step=0.01) - 1.234) ** 2
                       + (t.suggest_float("y", -3, 3, step=0.01) + 0.5) ** 2, n_trials=25)
        return study.best_value

    assert found(FlatBO(seed=0)) < 0.01 < found(optuna.samplers.RandomSampler(seed=0))


def _conditional(trial: optuna.Trial) -> float:
    kind = trial.suggest_categorical("kind", ["x", "y"])
    value = trial.suggest_float(f"{kind}_v", 0, 1)
    return value if kind == "x" else 1 - value


def _auto() -> AutoSampler:
    return AutoSampler(FlatBO(seed=0), optuna.samplers.TPESampler(seed=0, multivariate=True, group=True))


def test_auto_takes_flat_bo_on_a_flat_space_and_tpe_on_a_conditional_one() -> None:
    flat = optuna.create_study(directions=["minimize", "minimize"], sampler=_auto())
    flat.optimize(_two_objectives, n_trials=5)
    sampler = flat.sampler
    assert isinstance(sampler, AutoSampler) and sampler.model_for(flat) is sampler.flat
    conditional = optuna.create_study(sampler=_auto())
    conditional.optimize(_conditional, n_trials=12)
    assert {t.params["kind"] for t in conditional.trials} == {"x", "y"}
    assert conditional.sampler.model_for(conditional) is conditional.sampler.conditional


def test_auto_draws_exactly_what_tpe_draws_on_the_conditional_quickstart() -> None:
    """The quickstart's pool makes its space conditional, so `auto` is today's `tpe` there: same
    seed, same told values, the same 20 designs (its start-up and 10 model-based draws)."""
    import zlib
    from pathlib import Path

    from search_space import OptunaDraw, compile_space, load
    from trials.search.samplers import SAMPLERS

    space = load(Path(__file__).resolve().parents[3] / "examples" / "quickstart.yaml").space
    compiled = compile_space(space)

    def designs(sampler_name: str) -> list[dict]:
        sampler = SAMPLERS.get(sampler_name)(20, 0, 7, len(compiled.subsets))
        study = optuna.create_study(directions=[o.direction for o in space.objectives], sampler=sampler)
        drawn = []
        for _ in range(20):
            trial = study.ask()
            compiled.sample(OptunaDraw(trial))
            params = dict(trial.params)
            code = zlib.crc32(repr(sorted(params.items())).encode())  # a fixed value per design
            study.tell(trial, [(code % 997) / 997 + 0.001 * k for k in range(len(space.objectives))])
            drawn.append(params)
        return drawn

    auto = designs("auto")
    assert auto == designs("tpe")
    assert len({repr(sorted(d.items())) for d in auto}) > 10


def test_three_objectives_are_scalarised_and_still_draw_untried_designs() -> None:
    study = optuna.create_study(directions=["minimize", "maximize", "minimize"], sampler=FlatBO(seed=1))
    study.optimize(lambda t: (lambda a, b: (float(a), float(b * a % 5), float((a - b) ** 2)))(
        t.suggest_categorical("a", list(range(5))), t.suggest_int("b", 0, 4)), n_trials=20)
    drawn = [(t.params["a"], t.params["b"]) for t in study.trials]
    assert len(set(drawn)) == 20
