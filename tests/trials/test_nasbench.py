"""The nasbench201 evaluator and a whole `vlmsearch run` over NAS-Bench-201's cell space."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from search_space.load import load
from search_space.sampling import RandomDraw, compile_space
from storage import ResultsStore
from trials import run_trial
from trials.evaluators.nasbench201 import table

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nasbench201.yaml"
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def table_rows(parameters: dict) -> dict[str, list[float]]:
    """The benchmark's own record of a cell (one value per training seed)."""
    return table(parameters["dataset"])._dataset["".join(str(OPS.index(parameters[f"op{i}"]))
                                                         for i in range(6))]


def test_a_cell_gets_the_benchmarks_numbers_in_our_units() -> None:
    compiled = compile_space(load(EXAMPLE).space)
    for seed in range(5):
        point = compiled.sample(RandomDraw(seed))
        result = run_trial(point)
        assert result.status == "complete" and result.failure is None
        rows = table_rows(point.parameters)
        assert any(abs(result.metrics["accuracy"] - v / 100) < 1e-12 for v in rows["val_acc"])
        assert abs(result.metrics["latency_ms"] - rows["latency"][0] * 1000) < 1e-9
        assert abs(result.metrics["total_params"] - rows["model_size"][0] * 1e6) < 1e-3
        assert run_trial(point).metrics == result.metrics, "a design always sees the same seed"


def test_vlmsearch_run_searches_the_cell_space(tmp_path: Path) -> None:
    done = vlmsearch(tmp_path, "run", str(EXAMPLE), "--trials", "12", "--concurrency", "1",
                     "--tracking", "none")
    assert done.returncode == 0, done.stderr
    assert "Pareto front" in done.stdout and "op0=" in done.stdout
    with ResultsStore(f"sqlite:///{tmp_path}/vlmsearch-runs/results.db", create=False) as store:
        trials = store.trials("nasbench201")
        assert len(trials) == 12 and all(t.status == "complete" for t in trials)
        for trial in trials:
            rows = table_rows(trial.to_result("nasbench201").config.parameters)
            assert any(abs(trial.metrics["accuracy"] - v / 100) < 1e-9 for v in rows["val_acc"])
        ranks, _ = store.ranks("nasbench201")
    front = sorted(n for n, r in ranks.items() if r == 0)
    assert front, "a front was computed"
    exported = json.loads(vlmsearch(tmp_path, "results", "--study", "nasbench201", "--pareto",
                                    "--format", "json").stdout)
    assert sorted(t["number"] for t in exported) == front
    assert all(set(t["config"]) == {"evaluator", "parameters"} for t in exported)


def vlmsearch(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_a_resumed_search_draws_designs_it_has_not_drawn(tmp_path: Path) -> None:
    """Issue 20 (resumes never repeat): a seeded sampler restarted at its seed drew the designs of
    the first trials again (reused, so the study held 4 distinct designs of 6). A cell space of
    15,625 designs drawn at random: 6 trials in two runs are 6 designs."""
    space = tmp_path / "random.yaml"
    space.write_text(EXAMPLE.read_text().replace("  concurrency: 2", "  concurrency: 1\n  sampler: random"))
    for trials in ("3", "6"):
        done = vlmsearch(tmp_path, "run", str(space), "--trials", trials, "--resume", "--tracking", "none")
        assert done.returncode == 0, done.stderr
    with ResultsStore(f"sqlite:///{tmp_path}/vlmsearch-runs/results.db", create=False) as store:
        trials = store.trials("nasbench201")
    assert len(trials) == 6
    assert len({t.config_hash for t in trials}) == 6, [t.config_hash for t in trials]
