"""A planted optimum (issues 8 and 17): `vlmsearch run examples/planted.yaml` as a user runs it.

The pool holds three tiny experts trained to one skill each (examples/experts: colour, shape,
reader; trials/data/skill_experts.py) and the probe asks exactly those three skills, so the most
accurate subset is known: all three experts. With its default settings (TPE, no early stopping,
16 trials) the search must put a colour+shape+reader design on the front as its most accurate
design, and only designs with the reader read the digits. Then `vlmsearch report` must rank each
skill's own expert first (fANOVA) and give an expert the strongest adjusted effect on accuracy
(OLS), and `vlmsearch validate` must report Kendall's tau and find the planted designs still
the most accurate at 1.5x the budget.
Measured, seed 0 (2026-12-04, in CI beside the other tests: 407 s): colour+shape+reader 0.978
(small_text 0.94) on the front; report: color -> expert:colour, shape -> expert:shape,
small_text -> expert:reader; the front and top 2 (three colour+shape+reader designs) at 1.5x:
0.978 -> 0.975, 0.975 -> 0.972, 0.975 -> 0.975. The search's random start tries every subset
once (trials/search/balanced.py); before it, seed 1 never drew the three experts together in 16
trials. Seeds 1-3 by hand: docs/BENCHMARKS.md. channel_concat's pooling does NOT lose the reader
here (each of the four digit slots lands in its own cell of the pooled 2x2 grid).
Other seeds (data, training and search seed together):
`VLMSEARCH_PLANTED_SEEDS=0,1,2,3 pytest tests/trials/test_planted_optimum.py -rP`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import EXAMPLES

PLANTED = EXAMPLES / "planted.yaml"
EXAMPLE = yaml.safe_load(PLANTED.read_text())
BEST = ("colour", "shape", "reader")
READER = "reader"
SMALL_TEXT = "accuracy/small_text"
SEEDS = [int(s) for s in os.environ.get("VLMSEARCH_PLANTED_SEEDS", "0").split(",")]


def space_file(tmp_path: Path, seed: int) -> Path:
    """The example itself for seed 0; else a copy with the data, train and search seeds set."""
    if seed == 0:
        return PLANTED
    space = yaml.safe_load(PLANTED.read_text())  # a fresh copy; its experts' folders made absolute
    space["data"]["seed"] = space["train"]["seed"] = space["search"]["seed"] = seed
    for expert in space["experts"]["pool"].values():
        expert["source"] = str(EXAMPLES / expert["source"])
    path = tmp_path / "planted.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def vlmsearch(tmp_path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], cwd=tmp_path, text=True,
                          capture_output=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def design(trial: dict[str, Any]) -> tuple[tuple[str, ...], str]:
    return tuple(trial["config"]["experts"]), trial["config"]["fusion"]["kind"]


def is_best(trial: dict[str, Any]) -> bool:
    return set(design(trial)[0]) == set(BEST)


def reads(trials: list[dict[str, Any]], reader: bool) -> list[float]:
    """small_text accuracy of the designs with (or without) the reader."""
    return [t["metrics"][SMALL_TEXT] for t in trials if (READER in design(t)[0]) == reader]


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("seed", SEEDS)
def test_search_finds_the_planted_subset(tmp_path: Path, seed: int) -> None:
    run = vlmsearch(tmp_path, "run", str(space_file(tmp_path, seed)), "--tracking", "none",
                    timeout=840)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Pareto front" in run.stdout
    shown = vlmsearch(tmp_path, "results", "--study", "planted", "--format", "json", timeout=120)
    assert shown.returncode == 0, shown.stderr
    trials = json.loads(shown.stdout)
    assert len(trials) == EXAMPLE["search"]["trials"]
    complete = list({t["config_hash"]: t for t in trials if t["status"] == "complete"}.values())
    summary = f"seed {seed}: " + "; ".join(
        f"{'+'.join(design(t)[0])}/{design(t)[1]} acc {t['metrics']['accuracy']:.3f} "
        f"digits {t['metrics'][SMALL_TEXT]:.2f} rank {t['pareto_rank']}"
        for t in sorted(complete, key=lambda t: -t["metrics"]["accuracy"]))
    print(summary)  # shown with -rP: what this run measured

    # (a) the planted best design was drawn, is on the front, and is the most accurate one
    assert any(is_best(t) and t["pareto_rank"] == 0 for t in complete), summary
    assert is_best(max(complete, key=lambda t: t["metrics"]["accuracy"])), summary
    # (b) only the reader reads the digits (chance: 0.10)
    with_reader, without = reads(complete, True), reads(complete, False)
    assert with_reader and without, summary
    assert min(with_reader) >= 0.8 and max(without) <= 0.3, summary
    check_report(tmp_path, summary)
    check_validation(tmp_path, summary)


PLANTED_SKILLS = {"accuracy/color": "expert:colour", "accuracy/shape": "expert:shape",
                  "accuracy/small_text": "expert:reader"}


def check_report(tmp_path: Path, summary: str) -> None:
    """(c) `vlmsearch report` ranks the planted factors first: by fANOVA, each skill's own expert
    is the most important factor for that skill, and an expert's presence has the strongest
    adjusted effect on accuracy."""
    ran = vlmsearch(tmp_path, "report", "--study", "planted", "--format", "json", "--tracking", "none",
                    "--similarity-images", "32", timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    report = json.loads(ran.stdout)
    ranked = {m: [r["factor"] for r in sorted((r for r in report["importance"] if r["metric"] == m),
                                              key=lambda r: -(r["fanova"] or 0.0))]
              for m in ("accuracy", *PLANTED_SKILLS)}
    shown = f"{summary}\nfANOVA ranking: {ranked}"
    print(f"fANOVA ranking: {ranked}")
    for metric, expert in PLANTED_SKILLS.items():
        assert ranked[metric][0] == expert, shown
    adjusted = strongest_adjusted_effect(report, set(ranked["accuracy"]))
    print(f"strongest adjusted effect on accuracy: {adjusted}")
    assert adjusted.startswith("expert:"), f"{shown}\nstrongest adjusted effect: {adjusted}"
    assert len(report["similarity"]) == 3 and all(r["near_duplicate"] is False for r in report["similarity"])


def strongest_adjusted_effect(report: dict[str, Any], factors: set[str]) -> str:
    """The factor (of `factors`) with the largest OLS effect on accuracy, the others held fixed.

    On accuracy as a whole, the experts are checked by the adjusted effects, not by fANOVA: the
    search samples adaptively, so a factor it varied only alongside the subset borrows the
    subset's effect in a forest fit (seed 3: every colour+shape+reader trial was sequence_concat,
    and fANOVA ranked fusion first), while the OLS effects hold the experts fixed."""
    effects = [r for r in report["effects"] if r["metric"] == "accuracy" and r["factor"] in factors
               and r["coef"] is not None]
    return max(effects, key=lambda r: abs(r["coef"]))["factor"]


def check_validation(tmp_path: Path, summary: str) -> None:
    """(d) `vlmsearch validate` re-trains the front (and the top 2) at 1.5x the budget, one seed
    (CI's time), and reports Kendall tau: a number wherever the designs' search values differ.
    What must hold is the planted answer: each colour+shape+reader design keeps its accuracy
    (within 0.05; they plateau by 300 steps) and stays above every other validated design. Tau's
    size is not asked: the front and top 2 are mostly colour+shape+reader designs a few questions
    apart, whose order is seed noise (tau 0.50, -1.0, -0.33 on seeds 0-2), and a weaker design on
    the front may gain from the longer budget (seed 3: colour+reader 0.750 -> 0.817; tau 0.85).
    Tau over spread designs is measured in BENCHMARKS."""
    ran = vlmsearch(tmp_path, "validate", "--study", "planted", "--top", "2", "--seeds", "1",
                    "--budget-factor", "1.5", "--format", "json", "--tracking", "none", timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    validation = json.loads(ran.stdout)
    designs, tau = validation["designs"], validation["kendall_tau"]
    measured = f"validation: tau {tau}, " + "; ".join(
        f"{d['design']} {d['search']['accuracy']:.3f} -> {d['validation']['accuracy']['mean']:.3f}"
        for d in designs)
    print(measured)
    shown = f"{summary}\n{measured}"
    assert validation["steps"] == 450 and any(d["front"] for d in designs), shown
    assert tau is not None or len({d["search"]["accuracy"] for d in designs}) < 2, shown
    planted = [d for d in designs if set(d["subset"]) == set(BEST)]
    others = [d["validation"]["accuracy"]["mean"] for d in designs if d not in planted]
    assert planted, shown
    for d in planted:
        assert abs(d["validation"]["accuracy"]["mean"] - d["search"]["accuracy"]) <= 0.05, shown
        assert all(d["validation"]["accuracy"]["mean"] > other for other in others), shown
