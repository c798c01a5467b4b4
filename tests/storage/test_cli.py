"""`vlmsearch studies`, `results` and `run` on the store, as a user runs them (subprocesses)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from storage import ResultsStore
from tests.storage.helpers import SPACE, info, record
from tests.storage.test_store import front_of

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cr3t-Pa55"


def vlmsearch(*args: str, cwd: Path = ROOT, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.fixture
def results(url: str) -> list:
    """A study of 20 trials with its front, as a search leaves it."""
    with ResultsStore(url) as store:
        store.study_started(info("small"))
        done = [record(store, "small", n) for n in range(20)]
        store.front_updated("small", front_of(done))
        store.study_finished("small")
    return done


def test_studies(url: str, results: list) -> None:
    shown = vlmsearch("studies", "--storage", url)
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if "small" in line)
    counts = [int(cell) for cell in line.split("│")[4:8]]
    statuses = ("running", "complete", "pruned", "failed")
    assert counts == [sum(r.status == s for r in results) for s in statuses]
    assert "finished" in line and " 20 " in line


def test_results_in_every_format(url: str, results: list) -> None:
    as_json = vlmsearch("results", "--study", "small", "--format", "json", "--storage", url)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == [r.to_json() for r in results]  # the trial JSON, exactly

    pareto = vlmsearch("results", "--study", "small", "--pareto", "--format", "json", "--storage", url)
    front = [r.to_json() for r in results if r.pareto_rank == 0]
    assert sorted(json.loads(pareto.stdout), key=lambda t: t["number"]) == front and front

    as_csv = vlmsearch("results", "--study", "small", "--format", "csv", "--storage", url)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [int(r["number"]) for r in rows] == list(range(20))
    for row, r in zip(rows, results, strict=True):
        assert row["status"] == r.status and row["config_hash"] == r.config_hash
        assert json.loads(row["config"]) == r.config.canonical()
        if "accuracy" in r.metrics:
            assert float(row["accuracy"]) == r.metrics["accuracy"]

    table = vlmsearch("results", "--study", "small", "--pareto", "--storage", url)
    assert table.returncode == 0, table.stderr
    assert f"Pareto front of 'small': {len(front)} of 20 trials" in table.stdout
    assert all(t["config_hash"] in table.stdout for t in front)
    everything = vlmsearch("results", "--study", "small", "--storage", url)
    assert all(r.config_hash in everything.stdout for r in results)


def test_unknown_study_exits_2_with_a_suggestion(url: str, results: list) -> None:
    shown = vlmsearch("results", "--study", "smal", "--storage", url)
    assert shown.returncode == 2
    assert shown.stderr.strip() == "unknown study 'smal'; did you mean 'small'? known: small"
    assert "Traceback" not in shown.stderr and not shown.stdout


def test_a_password_is_never_printed(url: str, results: list) -> None:
    if make_url(url).get_backend_name() == "postgresql":  # the test server trusts any password
        url = make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)
    unreachable = f"postgresql+psycopg://someone:{PASSWORD}@127.0.0.1:1/nothing"
    runs = [vlmsearch("studies", "--storage", url), vlmsearch("db", "upgrade", "--storage", url),
            vlmsearch("results", "--study", "small", "--pareto", "--storage", url),
            vlmsearch("results", "--study", "nope", "--storage", url),
            vlmsearch("studies", "--storage", unreachable)]
    assert [r.returncode for r in runs] == [0, 0, 0, 2, 2]
    for done in runs:
        assert PASSWORD not in done.stdout + done.stderr
    assert "someone:***@127.0.0.1:1/nothing" in runs[-1].stderr and "Traceback" not in runs[-1].stderr


def test_unreadable_storage_exits_2(tmp_path: Path) -> None:
    for bad in ("nonsense", "mysql+nodriver://u@h/db"):
        shown = vlmsearch("studies", "--storage", bad, cwd=tmp_path)
        assert shown.returncode == 2 and "Traceback" not in shown.stderr and shown.stderr.strip()
    empty = vlmsearch("studies", cwd=tmp_path)  # the default store, not there yet: nothing to show
    assert empty.returncode == 0 and "no studies in sqlite:///vlmsearch-runs/results.db" in empty.stdout
    assert not (tmp_path / "vlmsearch-runs").exists()


@pytest.mark.slow
def test_a_search_records_into_the_store(url: str, tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(SPACE.replace("trials: 8,", "trials: 3,"))
    ran = vlmsearch("run", "space.yaml", "--storage", url, cwd=tmp_path, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    log = tmp_path / "vlmsearch-runs/small/events.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    finished = {e["number"]: {k: v for k, v in e.items() if k != "event"} for e in events
                if e["event"] == "trial_finished"}
    pareto = [e for e in events if e["event"] == "front_updated"][-1]["pareto"]

    shown = vlmsearch("results", "--study", "small", "--format", "json", "--storage", url, cwd=tmp_path)
    stored = json.loads(shown.stdout)
    assert [t["number"] for t in stored] == sorted(finished) == [0, 1, 2]
    for t in stored:  # the same trial JSON; ranks as of the last front (the events hold earlier ones)
        assert {**t, "pareto_rank": None} == {**finished[t["number"]], "pareto_rank": None}
    assert sorted(t["number"] for t in stored if t["pareto_rank"] == 0) == pareto
    studies = vlmsearch("studies", "--storage", url, cwd=tmp_path)
    assert "small" in studies.stdout and "finished" in studies.stdout
