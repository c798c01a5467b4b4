"""How a study looks in MLflow: names, tags, and a point flattened into MLflow params.

One experiment per study (named after the study); in it one parent run (tag `vlmsearch.kind` =
`study`) and one child run per trial (`vlmsearch.kind` = `trial`, `vlmsearch.trial` = its number,
`mlflow.parentRunId` = the parent). The user-facing tags of a child are the CONTRACT's names:
`status`, `config_hash`, `steps`, `feasible`, `pareto_rank`, `is_pareto`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

# MLflow's own limits (mlflow.utils.validation), fixed here so importing this module stays cheap.
MAX_KEY = 250  # characters in a param, metric or tag key
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

KIND, STUDY, TRIAL, RECORDER, SYNCED = ("vlmsearch.kind", "vlmsearch.study", "vlmsearch.trial",
                                         "vlmsearch.recorder", "vlmsearch.synced")
FIRST_OBJECTIVE = "vlmsearch.first_objective"  # experiment tag: `accuracy:maximize`, to sort links
EXPERIMENT_KIND = "mlflow.experimentKind"  # the UI opens in its model-training mode
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
NOTE = "mlflow.note.content"  # the run's description in the UI

# vlmsearch status -> MLflow run status. A pruned trial was stopped by the scheduler: KILLED.
RUN_STATUS = {"running": "RUNNING", "complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}

TRUNCATED = "...(truncated; the full value is in point.yaml)"
PARETO_FILTER = "tags.is_pareto = 'true'"


def trial_run_name(number: int) -> str:
    return f"trial-{number:04d}"


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested mappings as dotted keys; lists and scalars are leaves."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{name}.")
        else:
            yield name, value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "))


def _fit(key: str, value: str, limit: int) -> tuple[str, str]:
    if len(key) > MAX_KEY:
        key = key[:MAX_KEY - 9] + "~" + hashlib.sha256(key.encode()).hexdigest()[:8]
    if len(value) > limit:
        value = value[:limit - len(TRUNCATED)] + TRUNCATED
    return key, value


def point_params(config: Mapping[str, Any]) -> dict[str, str]:
    """A canonical point (TrialConfig.canonical()) as MLflow params within MLflow's limits:
    `experts` = the chosen subset in order, then `experts.clip.layers`, `fusion.kind`, ..."""
    params = {"experts": ",".join(config["experts"])} if "experts" in config else {}
    for key, value in flatten(config):
        params[key] = _text(value)
    return dict(_fit(k, v, MAX_PARAM_VALUE) for k, v in params.items())


def settings_params(settings: Mapping[str, Any]) -> dict[str, str]:
    """Search settings (backend, sampler, trials, ...) as params of the study's parent run."""
    return dict(_fit(f"search.{k}", _text(v), MAX_PARAM_VALUE) for k, v in flatten(settings))


def tag(key: str, value: Any) -> tuple[str, str]:
    return _fit(key, _text(value), MAX_TAG_VALUE)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def pareto_tags(rank: int | None, status: str) -> dict[str, str]:
    """`pareto_rank` (0 = on the front; `none` for infeasible or unfinished designs) and `is_pareto`."""
    shown = str(rank) if rank is not None and status == "complete" else "none"
    return {"pareto_rank": shown, "is_pareto": "true" if shown == "0" else "false"}
