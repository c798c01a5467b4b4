"""MLflow tracking against a real MLflow (local SQLite store and a real `mlflow server`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from dashboard.client import open_client
from dashboard.server import start_server, stop_server, wait_until_up
from dashboard.tracker import StudyTracker
from search_space import compile_space, parse
from search_space.result import Failure, TrialResult
from storage import ResultsStore
from tests.at_once import START, run_at_once
from tests.dashboard.conftest import SPACE, Study, free_port, vlmsearch
from tests.dashboard.mlflow_view import assert_mirrors_store, logged, sample_results


@pytest.mark.xdist_group("finished_study")  # the study is run once (test_dashboard.py)
def test_a_finished_study_mirrors_the_results_store(finished_study: Study) -> None:
    seen = assert_mirrors_store(finished_study.tracking, finished_study.storage)
    assert len(seen.children) == 6
    client = MlflowClient(finished_study.tracking)
    parent = seen.parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["search.sampler"] == "auto" and parent.data.params["search.trials"] == "6"
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert files == {"space.yaml", "pareto.csv", "pareto.png", "pareto.html"}
    history = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]  # step = finished trials
    with ResultsStore(finished_study.storage, create=False) as store:
        _, volume = store.ranks("small")
        front = store.pareto_front("small").trials
    assert max(history, key=lambda m: m.step).value == pytest.approx(volume)
    folder = Path(client.download_artifacts(parent.info.run_id, "", str(finished_study.folder / "dl")))
    rows = (folder / "pareto.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == [t.number for t in front]
    assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (folder / "pareto.html").read_text()
    assert page.count('class="front"') == len(front)


@pytest.mark.xdist_group("finished_study")  # the study is run once (test_dashboard.py)
def test_each_child_holds_its_point_params_and_steps(finished_study: Study) -> None:
    client = MlflowClient(finished_study.tracking)
    seen = logged(finished_study.tracking)
    with ResultsStore(finished_study.storage, create=False) as store:
        stored = {t.number: t for t in store.trials("small")}
        histories = {n: store.history("small", n) for n in stored}
    for number, run in seen.by_number.items():
        trial = stored[number]
        assert run.info.run_name == f"trial-{number:04d}"
        assert run.data.params["experts"] == ",".join(trial.config["experts"])
        assert run.data.params["fusion.kind"] == trial.config["fusion"]["kind"]
        point = client.download_artifacts(run.info.run_id, "point.yaml", str(finished_study.folder / "p"))
        data = yaml.safe_load(Path(point).read_text())
        assert compile_space(parse(Path(point).read_text()).space).only_point().config_hash == \
            trial.config_hash, data
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")]
        assert steps == sorted({s for s, _ in histories[number]} | {trial.steps}) or trial.status == "failed"


def test_more_trials_move_the_front_and_the_tags_follow(finished_study: Study, tmp_path: Path) -> None:
    folder = tmp_path / "more"
    shutil.copytree(finished_study.folder, folder)
    study = Study(folder, f"sqlite:///{folder}/results.db", f"sqlite:///{folder}/mlflow.db")
    ran = vlmsearch("run", "space.yaml", "--storage", study.storage, "--tracking", study.tracking,
                    "--resume", "--trials", "10", cwd=folder)
    assert ran.returncode == 0, ran.stderr[-3000:]
    seen = assert_mirrors_store(study.tracking, study.storage)
    assert len(seen.children) == 10
    history = MlflowClient(study.tracking).get_metric_history(seen.parents[0].info.run_id, "hypervolume")
    assert sorted(m.step for m in history) == list(range(1, 11))  # no step logged twice on resume


def test_a_dominating_trial_takes_is_pareto_from_the_ones_it_beats(tmp_path: Path) -> None:
    space = parse(SPACE).space
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first, second, third = sample_results(SPACE)
    tracker = StudyTracker(open_client(uri), "small", str(tmp_path / "art"))
    tracker.open(space, SPACE, {"sampler": "tpe"})
    tracker.finish_trial(first)
    tracker.finish_trial(second)
    tracker.update_front({0: 0, 1: 0}, 1.0, 2)
    assert logged(uri).pareto() == {0, 1}
    tracker.finish_trial(third)  # better on both objectives than both
    tracker.update_front({0: 1, 1: 1, 2: 0}, 2.0, 3)
    assert logged(uri).pareto() == {2}
    assert {n: r.data.tags["pareto_rank"] for n, r in logged(uri).by_number.items()} == \
        {0: "1", 1: "1", 2: "0"}

    again = StudyTracker(open_client(uri), "small", str(tmp_path / "art"))  # a resumed search replays
    again.open(space, SPACE, {"sampler": "tpe"})
    for result in (first, second, third):
        again.finish_trial(result)
    again.update_front({0: 1, 1: 1, 2: 0}, 2.0, 3)
    seen = logged(uri)
    assert len(seen.parents) == 1 and sorted(seen.numbers().values()) == [1, 1, 1]
    client = MlflowClient(uri)
    accuracy = client.get_metric_history(seen.by_number[2].info.run_id, "accuracy")
    assert [(m.step, m.value) for m in sorted(accuracy, key=lambda m: m.step)] == [(4, 0.175), (12, 0.35)]
    assert len(client.get_metric_history(seen.parents[0].info.run_id, "hypervolume")) == 2


def test_a_failed_trial_is_a_failed_run_with_its_reason(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = sample_results(SPACE)[0]
    failed = TrialResult(first.config, "failed", 3, {}, Failure("nan", "loss became nan at step 3"),
                         study="small", number=0)
    tracker = StudyTracker(open_client(uri), "small", str(tmp_path / "art"))
    tracker.open(parse(SPACE).space, SPACE, {})
    tracker.finish_trial(failed)
    run = logged(uri).by_number[0]
    assert run.info.status == "FAILED"
    assert (run.data.tags["failure"], run.data.tags["feasible"], run.data.tags["is_pareto"]) == \
        ("nan", "false", "false")
    assert "loss became nan" in run.data.tags["failure_message"]


def test_a_run_left_running_by_a_dead_search_is_failed_when_the_study_opens(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    first, second = sample_results(SPACE)[:2]
    tracker = StudyTracker(open_client(uri), "small", str(tmp_path / "art"))
    tracker.open(parse(SPACE).space, SPACE, {})
    tracker.recorder = f"{socket.gethostname()}:{dead}"  # as if that process had started trial 0
    tracker.start_trial(0, first.config)
    tracker.recorder = f"{socket.gethostname()}:{os.getpid()}"
    tracker.start_trial(1, second.config)  # a live search's trial: left alone

    reopened = StudyTracker(open_client(uri), "small", str(tmp_path / "art"))
    assert reopened.open(parse(SPACE).space, SPACE, {}).orphans_terminated == 1
    runs = logged(uri).by_number
    assert runs[0].info.status == "FAILED" and runs[0].data.tags["status"] == "failed"
    assert "stopped before the trial finished" in runs[0].data.tags["failure_message"]
    assert runs[1].info.status == "RUNNING"

    reopened.finish_trial(first)  # Optuna had it finished: a resumed search replays it
    run = logged(uri).by_number[0]
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "complete"
    assert "failure" not in run.data.tags and "failure_message" not in run.data.tags


def test_sync_rebuilds_mlflow_from_the_store_without_duplicates(finished_study: Study, tmp_path: Path
                                                                ) -> None:
    folder = tmp_path / "sync"
    shutil.copytree(finished_study.folder, folder)
    tracking = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(tracking)
    seen = logged(tracking)
    keep = seen.by_number[2]
    client.create_run(keep.info.experiment_id, run_name="trial-0002", tags={  # the same trial twice
        "vlmsearch.kind": "trial", "vlmsearch.trial": "2", "vlmsearch.study": "small"})
    client.delete_run(seen.by_number[4].info.run_id)  # and one never logged
    storage = f"sqlite:///{folder}/results.db"
    synced = vlmsearch("sync", "--study", "small", "--storage", storage, "--tracking", tracking, cwd=folder)
    assert synced.returncode == 0, synced.stderr
    assert "1 duplicate run(s) deleted" in synced.stdout and "1 logged now, 5 already" in synced.stdout
    assert_mirrors_store(tracking, storage)
    assert logged(tracking).by_number[2].info.run_id == keep.info.run_id  # the complete one is kept

    (folder / "mlflow.db").unlink()  # MLflow lost entirely: rebuilt from the store
    again = vlmsearch("sync", "--study", "small", "--storage", storage, "--tracking", tracking, cwd=folder)
    assert again.returncode == 0 and "6 logged now" in again.stdout, again.stderr
    rebuilt = assert_mirrors_store(tracking, storage)
    assert _volumes(tracking, rebuilt) == pytest.approx(_volumes(finished_study.tracking,
                                                                 logged(finished_study.tracking)))
    twice = vlmsearch("sync", "--study", "small", "--storage", storage, "--tracking", tracking, cwd=folder)
    assert "0 logged now, 6 already in MLflow" in twice.stdout
    assert_mirrors_store(tracking, storage)


def _volumes(tracking: str, seen) -> dict[int, float]:
    """The parent's hypervolume by step (finished trials)."""
    history = MlflowClient(tracking).get_metric_history(seen.parents[0].info.run_id, "hypervolume")
    return {m.step: m.value for m in history}


def test_sync_of_an_unknown_study_exits_2(finished_study: Study) -> None:
    ran = vlmsearch("sync", "--study", "smal", "--storage", finished_study.storage, "--tracking",
                    finished_study.tracking, cwd=finished_study.folder)
    assert ran.returncode == 2 and "did you mean 'small'" in ran.stderr and "Traceback" not in ran.stderr


def test_a_tracking_uri_mlflow_cannot_use_exits_2_before_anything_is_created(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(SPACE, encoding="utf-8")
    ran = vlmsearch("run", "space.yaml", "--tracking", "ftp://example/mlflow", cwd=tmp_path)
    assert ran.returncode == 2 and "is not one MLflow can use" in ran.stderr, ran.stderr
    assert not (tmp_path / "vlmsearch-runs").exists()


class MlflowServer:
    """A real `mlflow server` on a loopback port over a SQLite file; can be stopped and restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = start_server(f"sqlite:///{self.folder}/server.db", "127.0.0.1", self.port,
                                    self.folder / "art", output=subprocess.DEVNULL)
        wait_until_up(self.process, self.uri)

    def stop(self) -> None:
        if self.process is not None:
            stop_server(self.process)
            self.process = None


@pytest.fixture
def server(tmp_path: Path):
    running = MlflowServer(tmp_path)
    running.start()
    yield running
    running.stop()


def _finished_lines(events: Path) -> int:
    if not events.exists():
        return 0
    return sum(1 for line in events.read_text().splitlines() if '"trial_finished"' in line)


def test_the_server_stopped_midway_then_sync_completes_mlflow(server: MlflowServer, tmp_path: Path) -> None:
    folder = tmp_path / "search"
    folder.mkdir()
    (folder / "space.yaml").write_text(SPACE, encoding="utf-8")
    storage = f"sqlite:///{folder}/results.db"
    search = subprocess.Popen([sys.executable, "-m", "vlmsearch", "run", "space.yaml", "--storage", storage,
                               "--tracking", server.uri], cwd=folder, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    events = folder / "vlmsearch-runs" / "small" / "events.jsonl"
    deadline = time.monotonic() + 240
    while _finished_lines(events) < 2 and search.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    server.stop()  # mid-search: some trials are logged, the rest are not
    _, err = search.communicate(timeout=300)
    assert search.returncode == 0, err[-3000:]
    assert "the search goes on" in err and "vlmsearch sync --study small" in err, err[-3000:]
    with ResultsStore(storage, create=False) as store:
        assert store.summary("small").total == 6

    server.start()
    before = logged(server.uri)
    assert 1 <= len(before.children) < 6 or any(
        r.data.tags.get("vlmsearch.synced") != "true" for r in before.children)
    synced = vlmsearch("sync", "--study", "small", "--storage", storage, "--tracking", server.uri, cwd=folder)
    assert synced.returncode == 0, synced.stderr
    synced_view = assert_mirrors_store(server.uri, storage)
    assert synced_view.parents[0].info.status == "FINISHED"
    assert sorted(_volumes(server.uri, synced_view)) == [1, 2, 3, 4, 5, 6]  # the outage's steps too
    parent = logged(server.uri).parents[0].info.run_id
    files = {a.path for a in MlflowClient(server.uri).list_artifacts(parent)}
    assert {"pareto.html", "pareto.png", "pareto.csv", "space.yaml"} <= files


def test_sync_with_mlflow_unreachable_exits_1_and_names_the_retry(finished_study: Study) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    ran = vlmsearch("sync", "--study", "small", "--storage", finished_study.storage, "--tracking", dead,
                    cwd=finished_study.folder, timeout=180)
    assert ran.returncode == 1, ran.stderr
    assert "results store is unchanged" in ran.stderr and "Traceback" not in ran.stderr


def test_tracking_none_turns_mlflow_off(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(SPACE.replace("search: {trials: 6,", "search: {trials: 2,"))
    ran = vlmsearch("run", "space.yaml", "--tracking", "none", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert (tmp_path / "vlmsearch-runs" / "results.db").exists()
    assert not (tmp_path / "vlmsearch-runs" / "mlflow.db").exists()


OPEN_TRACKER = f"""\
import sys
from dashboard.client import open_client
from dashboard.tracker import StudyTracker
from search_space import parse
from tests.dashboard.conftest import SPACE
uri = sys.argv[2]
client = open_client(uri)
{START}
StudyTracker.on(client, uri, "small").open(parse(SPACE).space, SPACE, {{"sampler": "tpe"}})
"""


def test_searches_opening_one_study_at_once_share_one_experiment_and_parent(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    open_client(uri)  # (the file's migrations: tests/dashboard/test_client.py)
    run_at_once(OPEN_TRACKER, uri)
    client = MlflowClient(uri)
    assert [e.name for e in client.search_experiments()] == ["small", "Default"]
    parents = client.search_runs([client.get_experiment_by_name("small").experiment_id],
                                 run_view_type=3)  # (deleted ones too)
    assert len(parents) == 1


class LateSight:
    """A client that answers one search its first lookups as if another search had not yet created
    the experiment and the parent run: the interleaving of two searches on an `mlflow server`,
    where no file lock orders them."""

    def __init__(self, client: MlflowClient) -> None:
        self.client, self.blind = client, {"get_experiment_by_name", "search_runs"}

    def __getattr__(self, name: str):
        real = getattr(self.client, name)
        if name not in self.blind:
            return real
        self.blind.discard(name)
        return lambda *args, **kwargs: None if name == "get_experiment_by_name" else _NoRuns()


class _NoRuns(list):
    token = None


def test_a_search_that_lost_the_race_on_a_server_adopts_the_winners_experiment_and_parent(
        tmp_path: Path) -> None:
    space = parse(SPACE).space
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    winner = StudyTracker(open_client(uri), "small")
    winner.open(space, SPACE, {"sampler": "tpe"})
    loser = StudyTracker(LateSight(open_client(uri)), "small")
    report = loser.open(space, SPACE, {"sampler": "tpe"})
    assert (loser.experiment_id, loser.parent_id) == (winner.experiment_id, winner.parent_id)
    assert not report.created_parent
    client = MlflowClient(uri)
    active = client.search_runs([winner.experiment_id])
    assert [r.info.run_id for r in active] == [winner.parent_id]  # the loser's own parent: deleted
