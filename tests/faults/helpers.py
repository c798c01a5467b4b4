"""Running `vlmsearch` with the fault plugin, and reading back what a study left behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna

FAULT_SPACE = """\
name: {name}
evaluator: fault
parameters:
  fault: {{choices: {faults}}}
  x: {{choices: {xs}}}
objectives:
  - {{metric: accuracy, direction: maximize}}
  - {{metric: latency_ms, direction: minimize}}
search: {{trials: {trials}, concurrency: 2, sampler: {sampler}, backend: {backend}}}
"""


def write_space(folder: Path, name: str = "faults", faults: str = "[none]", xs: str = "[0, 1, 2]",
                trials: int = 3, sampler: str = "grid", backend: str = "optuna") -> Path:
    path = folder / "space.yaml"
    path.write_text(FAULT_SPACE.format(name=name, faults=faults, xs=xs, trials=trials, sampler=sampler,
                                       backend=backend))
    return path


def start(folder: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vlmsearch", "run", "space.yaml", *args], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def evaluations(log: Path) -> list[tuple[int, int, str]]:
    """(pid, x, fault) per evaluation the plugin started, in order."""
    if not log.exists():
        return []
    return [(int(p), int(x), f) for p, x, f in (line.split() for line in log.read_text().splitlines())]


def wait_until(condition: object, process: subprocess.Popen[str], limit: float = 180) -> None:
    deadline = time.time() + limit
    while not condition():  # type: ignore[operator]
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def stores(folder: Path) -> tuple[str, str]:
    """(tracking, storage) of a `vlmsearch run` in `folder` with the default locations."""
    runs = folder / "vlmsearch-runs"
    return f"sqlite:///{runs}/mlflow.db", f"sqlite:///{runs}/results.db"


def finished_events(folder: Path, study: str) -> Counter[int]:
    path = folder / "vlmsearch-runs" / study / "events.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return Counter(e["number"] for e in lines if e["event"] == "trial_finished")


def optuna_trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=storage).trials


def vlmsearch(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`vlmsearch ARGS` in `folder`, to its end."""
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
