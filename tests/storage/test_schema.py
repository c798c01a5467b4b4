"""Another program's database is never changed (issue 19, class 7): read commands open a SQLite
file read-only, and every command refuses a database that holds another program's tables and
none of vlmsearch's, before writing anything."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from storage import ResultsStore, StorageError
from storage.schema import OPTUNA_TABLES
from tests.storage.helpers import info, record

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "quickstart.yaml"


def vlmsearch(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_optuna_tables_are_optunas() -> None:
    from optuna.storages._rdb import models

    assert set(models.BaseModel.metadata.tables) | {"alembic_version"} == OPTUNA_TABLES


@pytest.fixture(scope="module")
def mlflow_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLflow tracking database (SQLite), with one run."""
    where = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    script = ("import mlflow; mlflow.set_tracking_uri('sqlite:///" + str(where) + "'); "
              "mlflow.set_experiment('x'); run = mlflow.start_run(); mlflow.log_metric('a', 1.0); "
              "mlflow.end_run()")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    return where


@pytest.mark.parametrize("command", [
    "studies", "results --study x", "results --study x --pareto --format json",
    "sync --study x --tracking none",
    "run {space} --trials 1 --tracking none", "db upgrade",
])
def test_mlflows_database_is_refused_and_left_as_it_was(mlflow_file: Path, tmp_path: Path,
                                                        command: str) -> None:
    before = digest(mlflow_file)
    mode = sqlite3.connect(mlflow_file).execute("PRAGMA journal_mode").fetchone()[0]
    line = [*command.format(space=EXAMPLE).split(), "--storage", f"sqlite:///{mlflow_file}"]
    done = vlmsearch(tmp_path, *line)
    assert done.returncode == 2, done.stderr
    assert "is not a vlmsearch results store" in done.stderr and "MLflow's tracking database" in done.stderr
    assert "Traceback" not in done.stderr
    assert digest(mlflow_file) == before, "not one byte of MLflow's file changed"
    assert sqlite3.connect(mlflow_file).execute("PRAGMA journal_mode").fetchone()[0] == mode == "delete"
    assert not (tmp_path / "vlmsearch-runs").exists()
    assert sorted(p.name for p in mlflow_file.parent.iterdir()) == ["mlflow.db"], "no -wal or -shm file"


def test_any_foreign_table_is_refused_by_the_python_api(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    before = digest(path)
    for read_only in (False, True):
        with pytest.raises(StorageError, match=r"holds another program's tables \(customers\)"):
            ResultsStore(f"sqlite:///{path}", read_only=read_only)
    assert digest(path) == before


def test_a_read_leaves_the_store_unchanged_and_an_empty_file_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'results.db'}"
    with ResultsStore(url) as store:
        store.study_started(info("small"))
        record(store, "small", 0)
    before = digest(tmp_path / "results.db")
    with ResultsStore(url, read_only=True) as store:
        assert [s.name for s in store.studies()] == ["small"]
        with pytest.raises(Exception):  # noqa: B017 - the driver refuses any write
            store.study_started(info("other"))
    assert digest(tmp_path / "results.db") == before
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with ResultsStore(f"sqlite:///{empty}", read_only=True) as store:
        assert not store.holds_results
    assert empty.stat().st_size == 0, "a read command creates no table"


def test_a_store_beside_another_programs_tables_is_still_opened(tmp_path: Path) -> None:
    """One file holding the store and MLflow's tables (both URLs named it): it is vlmsearch's."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with ResultsStore(url) as store:
        store.study_started(info("small"))
    with sqlite3.connect(tmp_path / "shared.db") as db:
        db.execute("CREATE TABLE experiments (id INTEGER PRIMARY KEY)")
    with ResultsStore(url, read_only=True) as store:
        assert [s.name for s in store.studies()] == ["small"]
