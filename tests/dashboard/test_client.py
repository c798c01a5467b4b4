"""Opening a local MLflow store: two processes creating the same new file at once (two searches
started together) both get a working store. Without the lock, MLflow's migrations race and leave
the file half-migrated (seen 3 times in 3 tries)."""

from __future__ import annotations

from pathlib import Path

from dashboard.client import open_client
from tests.at_once import START, run_at_once

OPEN = (f"import sys; from dashboard.client import open_client; {START}; "
        "open_client(sys.argv[2]).search_experiments()")


def test_two_processes_creating_one_tracking_file_both_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_at_once(OPEN, uri, processes=2)
    assert open_client(uri).search_experiments()[0].name == "Default"
