"""Searches started together on a new study database: Optuna's table creation and the study's
creation are races between processes. Each process must open the study (none may die of the
other's tables, CI saw `UNIQUE constraint failed: alembic_version.version_num`), and exactly one
creates and seeds it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 3
OPEN = """\
import sys, time
from pathlib import Path
from tests.trials.search_helpers import SMALL_SPACE, make_spec
from trials.search.optuna_backend import OptunaBackend
from trials.search.sinks import Sinks
database, folder, start = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
backend = OptunaBackend(make_spec(folder, SMALL_SPACE, storage=database, resume=True), Sinks([]))
time.sleep(max(0.0, start - time.time()))  # (imports done: all open at once)
study = backend.open_study()
print(study.study_name)
"""


def test_searches_opening_one_new_study_at_once_all_succeed(tmp_path: Path, database: str) -> None:
    start = time.time() + 8
    processes = [subprocess.Popen([sys.executable, "-c", OPEN, database, str(tmp_path), str(start)],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(PROCESSES)]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert out.strip() == "small"
    studies = optuna.get_all_study_summaries(database)
    assert [s.study_name for s in studies] == ["small"]
    study = optuna.load_study(study_name="small", storage=database)
    assert study.user_attrs["space"]["objectives"][0]["metric"] == "accuracy"
    assert study.trials == []  # (no seeds in this space; nothing asked yet)
