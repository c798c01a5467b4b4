"""The MLflow sink keeps a search going through an outage and logs everything once MLflow is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dashboard.client import open_client
from dashboard.sink import MlflowSink
from search_space import parse
from search_space.events import Front, StudyInfo
from tests.dashboard.conftest import SPACE
from tests.dashboard.mlflow_view import logged, sample_results


class Flaky:
    """A real MlflowClient that raises ConnectionError on every call while `down`."""

    def __init__(self, client: Any) -> None:
        self.client, self.down, self.calls_while_down = client, False, 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.calls_while_down += 1
                raise ConnectionError("Connection refused (the tracking server is down)")
            return method(*args, **kwargs)

        return call


def test_an_outage_is_reported_once_then_everything_is_logged_when_mlflow_is_back(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = Flaky(open_client(uri))
    said: list[str] = []
    sink = MlflowSink(uri, said.append, client=client)
    first, second, third = sample_results(SPACE)
    sink.study_started(StudyInfo("small", parse(SPACE).space, SPACE, {"sampler": "tpe"}))
    sink.trial_started("small", 0, first.config)
    sink.trial_finished("small", first)
    sink.front_updated("small", Front({0: 0}, 1.0, 1))

    client.down = True
    sink.trial_started("small", 1, second.config)
    sink.trial_intermediate("small", 1, 4, {"accuracy": 0.1, "visual_tokens": 4})
    sink.trial_finished("small", second)
    sink.front_updated("small", Front({0: 0, 1: 0}, 2.0, 2))
    assert client.calls_while_down == 1, "one failed call, then the sink backs off"
    assert len(said) == 1 and "the search goes on" in said[0] and "retries in 5 s" in said[0]
    assert sink.pending == 1

    client.down = False
    sink.retry_at = 0.0  # the back-off has passed
    sink.trial_started("small", 2, third.config)
    sink.trial_finished("small", third)
    sink.front_updated("small", Front({0: 1, 1: 1, 2: 0}, 3.0, 3))
    assert sink.pending == 0 and "answers again" in said[-1]
    sink.study_finished("small", "finished")

    seen = logged(uri)
    assert sorted(seen.numbers().items()) == [(0, 1), (1, 1), (2, 1)]
    assert all(r.data.tags["vlmsearch.synced"] == "true" for r in seen.children)
    assert seen.pareto() == {2} and seen.parents[0].info.status == "FINISHED"
    steps = [m.step for m in open_client(uri).get_metric_history(seen.by_number[1].info.run_id, "accuracy")]
    assert sorted(steps) == [4, 12], "the step reported during the outage was logged afterwards"


def test_a_search_that_ends_during_the_outage_names_sync(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = Flaky(open_client(uri))
    client.down = True
    said: list[str] = []
    sink = MlflowSink(uri, said.append, client=client)
    first = sample_results(SPACE)[0]
    sink.study_started(StudyInfo("small", parse(SPACE).space, SPACE, {}))
    sink.trial_started("small", 0, first.config)
    sink.trial_finished("small", first)
    sink.study_finished("small", "finished")
    assert "vlmsearch sync --study small" in said[-1] and "1 trial(s)" in said[-1]
