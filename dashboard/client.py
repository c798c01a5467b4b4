"""Opening MLflow on a tracking URI: a local store (SQLite) or a remote `mlflow server`.

MLflow is imported here and only when tracking is used. Against a server, MLflow retries a
failed request 7 times with exponential backoff (minutes); a search must not stall that long on a
dead server, so unless the user set them, the driver uses 2 retries, a backoff factor of 1 s and
a 15 s timeout: a down server costs a few seconds, then the sink backs off on its own.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

from common import one_at_a_time, redact_url, sqlite_path

DEFAULT_TRACKING = "sqlite:///vlmsearch-runs/mlflow.db"
OFF = ("none", "off", "")

HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}  # our output is the search's view


class TrackingError(RuntimeError):
    """Tracking cannot be used as asked (a bad URI); the message names the fix."""


def is_remote(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https", "databricks")


def artifact_root(uri: str) -> str | None:
    """Where a local store keeps artifacts: `mlartifacts/` beside the database, not MLflow's
    default `./mlruns` in whatever directory the search ran from. None: the server decides."""
    path = sqlite_path(uri)
    return str((path.parent / "mlartifacts").resolve()) if path is not None else None


def check_uri(uri: str) -> None:
    scheme = urlsplit(uri).scheme
    known = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "file", "databricks")
    if scheme.split("+")[0] not in known:
        raise TrackingError(f"tracking URI '{redact_url(uri)}' is not one MLflow can use; give "
                            "sqlite:///path/mlflow.db, http://host:5000 (an `mlflow server`), a "
                            "database URL, or `none` to turn tracking off")


def quiet_mlflow() -> None:
    """MLflow announces its database migrations at INFO; the search's own view is the output."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def open_client(uri: str):  # -> mlflow.tracking.MlflowClient
    check_uri(uri)
    if is_remote(uri):
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
    from mlflow.tracking import MlflowClient

    quiet_mlflow()  # after the import: MLflow configures its loggers when imported
    with one_at_a_time(sqlite_path(uri)):  # (makes the file's folder)
        return MlflowClient(tracking_uri=uri)  # (makes the store, migrating a new file)


def parent_run(client: Any, study: str) -> tuple[str, str] | None:
    """(experiment id, run id) of `study`'s parent run, the search's (`vlmsearch.kind` = study,
    the first one started); None when MLflow has no live experiment or no parent run for it."""
    from dashboard import layout

    experiment = client.get_experiment_by_name(study)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        return None
    parents = client.search_runs([experiment.experiment_id], f"tags.`{layout.KIND}` = 'study'",
                                 order_by=["attributes.start_time ASC"], max_results=1)
    return (experiment.experiment_id, parents[0].info.run_id) if parents else None
