"""optuna-dashboard over a study that `vlmsearch run` made: the real server, read through its JSON API.
vlmsearch names the study's objectives (`study.set_metric_names`), so the dashboard shows "accuracy"
and "latency_ms" instead of "Objective 0" and "Objective 1"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from search_space.load import load
from storage import ResultsStore
from storage.testing import free_port
from tests.conftest import EXAMPLES

pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (pip install -e '.[dev]')")

SPACE = EXAMPLES / "nasbench201.yaml"  # evaluator: nasbench201, table look-ups: a search in seconds
TRIALS = 3


def dashboard_command() -> str:
    beside_python = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    found = beside_python or shutil.which("optuna-dashboard")
    assert found, "optuna_dashboard imports but its `optuna-dashboard` command is not on PATH"
    return found


def get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as answer:
        assert answer.status == 200, (path, answer.status)
        return json.load(answer)


def wait_until_it_answers(server: subprocess.Popen[bytes], base: str, log: Path, within_s: float = 30) \
        -> None:
    deadline = time.monotonic() + within_s
    while True:
        if server.poll() is not None:
            pytest.fail(f"optuna-dashboard exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            get(base, "/api/meta")
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                said = log.read_text()[-3000:]
                pytest.fail(f"optuna-dashboard did not answer within {within_s} s:\n{said}")
            time.sleep(0.1)


def test_optuna_dashboard_shows_the_metric_names_of_a_vlmsearch_study(tmp_path: Path) -> None:
    space = load(SPACE).space
    storage = f"sqlite:///{tmp_path}/results.db"
    ran = subprocess.run([sys.executable, "-m", "vlmsearch", "run", str(SPACE), "--trials", str(TRIALS),
                          "--storage", storage, "--tracking", "none", "--run-dir", str(tmp_path / "runs")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert ran.returncode == 0, ran.stderr[-3000:]
    with ResultsStore(storage, create=False) as store:
        metrics = {t.number: t.metrics for t in store.trials("nasbench201")}
        ranks, _ = store.ranks("nasbench201")
    assert len(metrics) == TRIALS

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "optuna-dashboard.log"
    with log.open("wb") as out:
        # wsgiref, not gunicorn (the default when installed): no control socket under ~/.gunicorn
        server = subprocess.Popen([dashboard_command(), storage, "--host", "127.0.0.1", "--port", str(port),
                                   "--server", "wsgiref"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_it_answers(server, base, log)
        listed = get(base, "/api/studies")["study_summaries"]
        assert [s["study_name"] for s in listed] == ["nasbench201"], listed
        [summary] = listed
        directions = [o.direction for o in space.objectives]
        assert summary["directions"] == directions == ["maximize", "minimize"]

        detail = get(base, f"/api/studies/{summary['study_id']}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)

    names = [o.metric for o in space.objectives]
    assert detail.get("objective_names") == names == ["accuracy", "latency_ms"], (
        "optuna-dashboard falls back to 'Objective 0/1' without the study's metric names: "
        f"{detail.get('objective_names')!r}")
    assert detail["name"] == "nasbench201" and detail["directions"] == directions
    trials = detail["trials"]
    assert sorted(t["number"] for t in trials) == sorted(metrics) == list(range(TRIALS))
    for trial in trials:
        assert trial["state"] == "Complete", trial
        expected = [metrics[trial["number"]][name] for name in names]
        assert trial["values"] == pytest.approx(expected, rel=1e-12), trial["number"]
    front = sorted(n for n, r in ranks.items() if r == 0)
    assert sorted(t["number"] for t in detail["best_trials"]) == front, "the same Pareto front as vlmsearch's"
