"""A planted optimum (issues 8 and 17): `vlmsearch run examples/planted.yaml` as a user runs it.

The pool holds three tiny experts trained to one skill each (examples/experts: colour, shape,
reader; trials/data/skill_experts.py) and the probe asks exactly those three skills, so the most
accurate design is known: all three experts under sequence_concat. channel_concat pools the
reader's 8x8 grid to the smallest one and loses the digits. With its default settings (TPE, no
early stopping, 16 trials) the search must put that design on the front, and reader designs
under sequence_concat must read the digits better than reader designs under channel_concat.
Measured, seed 0 (222 s on a shared 2-core machine): colour+shape+reader/sequence_concat 0.977
(color 1.00, shape 1.00, small_text 0.93), the most accurate and on the front; shape+reader 0.805
(color 0.49); colour+shape 0.705 (small_text 0.12); colour alone 0.503 (4 tokens, front). Seed 0
drew no multi-expert channel_concat design with the reader, so (b) held only vacuously there;
seeds 1-3 not measured yet. Other seeds (data, training and search seed together):
`VLMSEARCH_PLANTED_SEEDS=0,1,2,3 pytest tests/trials/test_planted_optimum.py -rP`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import mean
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
    experts, fusion = design(trial)
    return set(experts) == set(BEST) and fusion == "sequence_concat"


def reads_with(trials: list[dict[str, Any]], fusion: str) -> list[float]:
    """small_text accuracy of designs with the reader and another expert under `fusion`."""
    return [t["metrics"][SMALL_TEXT] for t in trials
            if READER in design(t)[0] and len(design(t)[0]) > 1 and design(t)[1] == fusion]


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
    # (b) channel_concat's pooling loses the reader's digits
    sequence, channel = reads_with(complete, "sequence_concat"), reads_with(complete, "channel_concat")
    assert sequence, summary
    if channel:
        assert mean(sequence) >= mean(channel) + 0.2, summary
    check_report(tmp_path, summary)
    check_validation(tmp_path, summary)


PLANTED_SKILLS = {"accuracy/color": "expert:colour", "accuracy/shape": "expert:shape",
                  "accuracy/small_text": "expert:reader"}


def check_report(tmp_path: Path, summary: str) -> None:
    """(c) `vlmsearch report` ranks the planted factors first: by fANOVA, each skill's own expert
    is the most important factor for that skill, and expert presence leads on accuracy."""
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
    assert ranked["accuracy"][0].startswith("expert:"), shown
    assert len(report["similarity"]) == 3 and all(r["near_duplicate"] is False for r in report["similarity"])


def check_validation(tmp_path: Path, summary: str) -> None:
    """(d) `vlmsearch validate` re-trains the front at 1.5x the budget (one seed: CI's time) and
    reports Kendall tau; the planted designs differ by far more than a budget can reorder."""
    ran = vlmsearch(tmp_path, "validate", "--study", "planted", "--top", "0", "--seeds", "1",
                    "--budget-factor", "1.5", "--format", "json", "--tracking", "none", timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    validation = json.loads(ran.stdout)
    measured = f"validation: tau {validation['kendall_tau']:.3f}, " + "; ".join(
        f"{d['design']} {d['search']['accuracy']:.3f} -> {d['validation']['accuracy']['mean']:.3f}"
        for d in validation["designs"])
    print(measured)
    shown = f"{summary}\n{measured}"
    assert validation["steps"] == 450 and all(d["front"] for d in validation["designs"]), shown
    assert validation["kendall_tau"] is not None and validation["kendall_tau"] >= 0.6, shown
