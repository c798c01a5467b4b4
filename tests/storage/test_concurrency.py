"""Several real processes on one store: concurrent writers, and a writer killed mid-way."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from storage import ResultsStore, StoredTrial
from storage.models import metrics
from tests.storage.helpers import info, result, write

ROOT = Path(__file__).resolve().parents[2]


def expected_json(number: int) -> dict:
    return {**result("s", number).to_json(), "pareto_rank": None}


def as_written(t: StoredTrial) -> dict:
    """The trial JSON without its rank (no front is reported here; the store computes one)."""
    return {**t.to_json(), "pareto_rank": None}


def test_four_processes_write_100_trials_each(url: str) -> None:
    # each writes its own 100 numbers and 5 of its neighbour's (same results: a race on one row);
    # they also open the fresh store together, so they race on its migration too
    context = mp.get_context("spawn")
    plans = [list(range(100 * k, 100 * k + 100)) + list(range(100 * ((k + 1) % 4), 100 * ((k + 1) % 4) + 5))
             for k in range(4)]
    writers = [context.Process(target=write, args=(url, "s", plan)) for plan in plans]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=240)
    assert [w.exitcode for w in writers] == [0, 0, 0, 0]
    with ResultsStore(url) as store:
        found = store.trials("s")
        assert [t.number for t in found] == list(range(400))  # none lost, none twice
        assert [as_written(t) for t in found] == [expected_json(n) for n in range(400)]
        with store.engine.connect() as connection:
            final = connection.execute(select(func.count()).where(metrics.c.final)).scalar_one()
            reports = connection.execute(select(func.count()).where(~metrics.c.final)).scalar_one()
        assert final == sum(len(t.metrics) for t in found)
        assert reports == 2 * 400  # one report of two metrics per trial, never duplicated
        (summary,) = store.studies()
        assert summary.total == 400 and summary.counts["running"] == 0


def count_finished(url: str) -> int:
    with ResultsStore(url) as store:
        if not store.study_names():
            return 0
        return sum(s.total - s.counts["running"] for s in store.studies())


def test_reopening_after_the_writer_was_killed(url: str) -> None:
    command = [sys.executable, "-m", "tests.storage.helpers", url, "s", "0", "60"]
    writer = subprocess.Popen([*command, "0.05"], cwd=ROOT)  # 50 ms "training" per trial
    deadline = time.time() + 120
    while count_finished(url) < 15:
        assert writer.poll() is None and time.time() < deadline, "the writer ended early"
        time.sleep(0.1)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()

    with ResultsStore(url) as store:
        (summary,) = store.studies()
        assert summary.name == "s" and summary.counts["running"] <= 1
        killed = store.trials("s")
        finished = [t for t in killed if t.status != "running"]
        assert len(finished) >= 15
        for t in finished:  # every trial written before the kill is whole
            assert as_written(t) == expected_json(t.number)
        assert [t.number for t in killed] == list(range(len(killed)))
        # a new search on the study fails the trial the dead writer left running
        store.study_started(info("s"))
        running = [t.number for t in killed if t.status == "running"]
        for t in store.trials("s", numbers=running):
            assert t.status == "failed" and t.failure is not None and "stopped before" in t.failure.message

    resumed = subprocess.run([*command, "0"], cwd=ROOT, timeout=240)  # replays, then continues
    assert resumed.returncode == 0
    with ResultsStore(url) as store:
        found = store.trials("s")
        assert [t.number for t in found] == list(range(60))
        assert [as_written(t) for t in found] == [expected_json(n) for n in range(60)]
        assert [t.started_at for t in found[: len(finished)]] == [t.started_at for t in finished]


def test_a_trial_left_running_by_a_dead_recorder_is_failed(url: str) -> None:
    code = ("import sys; from storage import ResultsStore; from tests.storage.helpers import info, result\n"
            "s = ResultsStore(sys.argv[1]); s.study_started(info('s'))\n"
            "s.trial_started('s', 0, result('s', 0).config)\n"
            "s.trial_started('s', 1, result('s', 1).config); s.trial_finished('s', result('s', 1))")
    subprocess.run([sys.executable, "-c", code, url], cwd=ROOT, check=True, timeout=120)
    with ResultsStore(url) as store:
        assert [t.status for t in store.trials("s")] == ["running", result("s", 1).status]
        store.study_started(info("s"))  # the process that recorded trial 0 is gone
        zero = store.trials("s", numbers=[0])[0]
        assert zero.status == "failed" and zero.failure is not None and zero.failure.reason == "error"
        store.trial_started("s", 2, result("s", 2).config)
        store.study_started(info("s"))  # this process is alive: its running trial stays running
        assert store.trials("s", numbers=[2])[0].status == "running"
