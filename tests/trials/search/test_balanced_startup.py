"""The model-based samplers' random start tries every expert subset once before the model takes
over (trials/search/balanced.py), where that takes at most half the search."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest

from trials.search.samplers import SAMPLERS, _startup

SUBSETS = ["colour", "shape", "reader", "colour+shape", "colour+reader", "shape+reader",
           "colour+shape+reader"]


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    subset = trial.suggest_categorical("experts", SUBSETS)
    lr = trial.suggest_float("lr", 1e-3, 3e-3, log=True)
    return len(subset) + lr, float(subset.count("+"))


@pytest.mark.parametrize("seed", range(4))
def test_the_start_tries_every_subset_once(seed: int) -> None:
    sampler = SAMPLERS.get("tpe")(16, 0, seed, len(SUBSETS))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(_objective, n_trials=len(SUBSETS))
    drawn = Counter(t.params["experts"] for t in study.trials)
    assert set(drawn) == set(SUBSETS) and set(drawn.values()) == {1}
    assert len({round(t.params["lr"], 6) for t in study.trials}) == len(SUBSETS)  # lr still drawn


def test_the_start_counts_running_trials_and_not_failed_ones() -> None:
    sampler = SAMPLERS.get("tpe")(16, 0, 0, 2)
    study = optuna.create_study(sampler=sampler)
    failed = study.ask({"experts": optuna.distributions.CategoricalDistribution(["a", "b"])})
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    running = study.ask()
    first = running.suggest_categorical("experts", ["a", "b"])
    second = study.ask().suggest_categorical("experts", ["a", "b"])
    assert {first, second} == {"a", "b"}  # the running trial's choice counts, the failed one not


def test_the_start_is_reproducible_by_seed() -> None:
    def draws(seed: int) -> list[str]:
        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=SAMPLERS.get("tpe")(16, 0, seed, len(SUBSETS)))
        study.optimize(_objective, n_trials=10)
        return [t.params["experts"] for t in study.trials]

    assert draws(3) == draws(3)


def test_the_start_covers_subsets_only_where_half_the_search_allows() -> None:
    assert _startup(16) == 5 and _startup(16, 7) == 7        # the planted benchmark
    assert _startup(24, 14) == 12 and _startup(100, 41) == 41
    assert _startup(16, 385) == 8                             # a big pool: half the search
    assert _startup(60, 1) == 10                              # one subset: Optuna-like default
