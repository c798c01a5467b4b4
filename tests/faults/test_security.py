"""Security: a password in a storage URL (in the YAML or a flag) is never printed, logged,
stored beside the study or sent to MLflow; a YAML names no code. (Dashboard: loopback by default
and `--auth` refusing anonymous requests are tested in tests/dashboard/test_dashboard.py.)"""

from __future__ import annotations

import uuid
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from search_space import SpaceError, parse
from storage import ResultsStore
from storage.testing import create_database, drop_database
from tests.faults.helpers import FAULT_SPACE, stores, vlmsearch

SECRET = "pw-" + uuid.uuid4().hex[:10]


def test_a_storage_password_goes_nowhere(tmp_path: Path, plugin_env: dict[str, str],
                                         postgres_server: str) -> None:
    name = f"vs_secret_{uuid.uuid4().hex[:10]}"
    url = make_url(create_database(postgres_server, name)).set(password=SECRET)  # trust auth takes any
    storage = url.render_as_string(hide_password=False)
    try:
        (tmp_path / "space.yaml").write_text(
            FAULT_SPACE.format(name="secret", faults="[none]", xs="[0, 1, 2]", trials=3, sampler="grid",
                               backend="optuna") + f"storage: {storage}\n")
        said = [vlmsearch(tmp_path, plugin_env, "run", "space.yaml"),
                vlmsearch(tmp_path, plugin_env, "studies", "--storage", storage),
                vlmsearch(tmp_path, plugin_env, "results", "--study", "secret", "--storage", storage),
                vlmsearch(tmp_path, plugin_env, "sync", "--study", "secret", "--storage", storage)]
        for done in said:
            assert done.returncode == 0, done.stderr
            assert SECRET not in done.stdout + done.stderr
        assert "***" in said[1].stdout or "postgres@" in said[1].stdout
        for path in (tmp_path / "vlmsearch-runs").rglob("*"):  # MLflow's db and artifacts, logs, cache
            assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
        client = MlflowClient(stores(tmp_path)[0])
        experiment = client.get_experiment_by_name("secret")
        for run in client.search_runs([experiment.experiment_id]):
            assert SECRET not in repr(run.data.params) + repr(run.data.tags)
        with ResultsStore(storage, create=False) as store:  # beside the study, in its own database
            assert SECRET not in store.study_row("secret").space_yaml
        study = optuna.load_study(study_name="secret", storage=storage)
        assert SECRET not in repr(study.user_attrs) + repr([t.user_attrs for t in study.trials])
    finally:
        drop_database(postgres_server, name)


@pytest.mark.parametrize("text", [
    "name: x\nevaluator: os:system\nparameters: {a: 1}\n"
    "objectives: [{metric: accuracy, direction: maximize}]\n",
    "name: x\nexperts: {clip: {source: tiny-clip}}\nfusion: {kind: 'subprocess:run'}\n",
])
def test_a_yaml_names_no_code(text: str) -> None:
    """Names are looked up in registries (filled by vlmsearch and installed entry points), never
    imported: an import path is just an unknown name."""
    with pytest.raises(SpaceError, match="unknown"):
        parse(text)
