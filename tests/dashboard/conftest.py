"""A finished tiny study (a real search, results store + MLflow), shared by the dashboard tests."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.testing import free_port  # noqa: F401 - the dashboard tests' free loopback port
from tests.trials.search.search_helpers import SMALL_SPACE

ROOT = Path(__file__).resolve().parents[2]
SPACE = SMALL_SPACE.replace("search: {trials: 8,", "search: {trials: 6,")


def vlmsearch(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@dataclass(frozen=True)
class Study:
    folder: Path
    storage: str
    tracking: str
    name: str = "small"


def run_study(folder: Path, *extra: str, space: str = SPACE) -> Study:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(space, encoding="utf-8")
    study = Study(folder, f"sqlite:///{folder}/results.db", f"sqlite:///{folder}/mlflow.db")
    ran = vlmsearch("run", "space.yaml", "--storage", study.storage, "--tracking", study.tracking,
                    *extra, cwd=folder)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return study


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """`vlmsearch run` of a 6-trial study, logged to a local MLflow store (never modified)."""
    return run_study(tmp_path_factory.mktemp("finished"))
