"""Opening a local MLflow store: two processes creating the same new file at once (two searches
started together) both get a working store. Without the lock, MLflow's migrations race and leave
the file half-migrated (seen 3 times in 3 tries)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dashboard.client import open_client

OPEN = "import sys; from dashboard.client import open_client; open_client(sys.argv[1]).search_experiments()"


def test_two_processes_creating_one_tracking_file_both_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    root = str(Path(__file__).resolve().parents[2])
    both = [subprocess.Popen([sys.executable, "-c", OPEN, uri], cwd=root, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    for process in both:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert open_client(uri).search_experiments()[0].name == "Default"
