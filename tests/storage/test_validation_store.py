"""Validation trials in the store, on SQLite and PostgreSQL: numbers, idempotent starts, reruns of
unfinished ones, NaN, Ctrl-C, and the search's trials and front untouched."""

from __future__ import annotations

import math

import pytest

from search_space import TrialResult
from storage import ResultsStore, UnknownStudy, ValidationKey
from tests.storage.helpers import info, record
from tests.storage.test_store import front_of


def validation_point(r: TrialResult, seed: int, steps: int):  # -> TrialConfig
    train = r.config.train.with_total_steps(steps).model_copy(update={"seed": seed})
    return r.config.model_copy(update={"train": train})


@pytest.fixture
def searched(store: ResultsStore) -> list[TrialResult]:
    store.study_started(info("small"))
    done = [record(store, "small", n, status="complete") for n in range(4)]
    store.front_updated("small", front_of(done))
    store.study_finished("small")
    return done


def finish(store: ResultsStore, r: TrialResult, key: ValidationKey, accuracy: float) -> TrialResult:
    point = validation_point(r, key.seed, key.steps)
    store.validation_started("small", key, r.number, point)
    out = TrialResult(point, "complete", key.steps, {"accuracy": accuracy, "visual_tokens": 16})
    store.validation_finished("small", key, out)
    return out


def test_validation_trials_are_numbered_and_read_back(store: ResultsStore, searched: list) -> None:
    before = [t.to_json() for t in store.trials("small")], store.ranks("small")
    first, second = searched[0], searched[1]
    finish(store, first, ValidationKey(first.config_hash, 0, 48), 0.5)
    finish(store, first, ValidationKey(first.config_hash, 1, 48), math.nan)
    finish(store, second, ValidationKey(second.config_hash, 0, 48), 0.75)
    rows = store.validation_trials("small")
    assert [(r.number, r.validates, r.seed, r.steps, r.status) for r in rows] == [
        (0, 0, 0, 48, "complete"), (1, 0, 1, 48, "complete"), (2, 1, 0, 48, "complete")]
    assert rows[0].metrics == {"accuracy": 0.5, "visual_tokens": 16}
    assert math.isnan(rows[1].metrics["accuracy"])  # stored as null
    assert rows[1].to_json()["metrics"]["accuracy"] is None
    assert rows[0].config["train"]["steps"] == 48 and rows[1].config["train"]["seed"] == 1
    assert rows[0].design_hash == first.config_hash != rows[0].config_hash
    assert rows[0].duration_s is not None and rows[0].duration_s >= 0
    # the search's trials, ranks and front are as they were
    assert ([t.to_json() for t in store.trials("small")], store.ranks("small")) == before
    assert store.summary("small").total == 4


def test_a_complete_one_is_not_restarted_and_an_unfinished_one_reruns(store: ResultsStore,
                                                                        searched: list) -> None:
    r = searched[0]
    done, left = ValidationKey(r.config_hash, 0, 24), ValidationKey(r.config_hash, 1, 24)
    finish(store, r, done, 0.5)
    assert store.validation_started("small", done, r.number, validation_point(r, 0, 24)) == 0
    assert store.validation_trials("small", status="complete")[0].metrics["accuracy"] == 0.5
    assert store.validation_started("small", left, r.number, validation_point(r, 1, 24)) == 1
    assert store.validation_started("small", left, r.number, validation_point(r, 1, 24)) == 1  # killed, rerun
    assert [x.status for x in store.validation_trials("small")] == ["complete", "running"]
    assert store.validations_interrupted("small") == 1  # Ctrl-C
    failed = store.validation_trials("small", status="failed")
    assert [x.number for x in failed] == [1] and "run the same command again" in failed[0].failure.message
    finish(store, r, left, 0.25)  # the rerun
    assert [(x.number, x.status) for x in store.validation_trials("small")] == [(0, "complete"),
                                                                                  (1, "complete")]


def test_a_failed_result_is_recorded_with_its_reason(store: ResultsStore, searched: list) -> None:
    from search_space import Failure

    r = searched[2]
    key = ValidationKey(r.config_hash, 0, 24)
    point = validation_point(r, 0, 24)
    store.validation_started("small", key, r.number, point)
    failed = TrialResult(point, "failed", 3, failure=Failure("nan", "loss nan"))
    store.validation_finished("small", key, failed)
    (row,) = store.validation_trials("small")
    assert (row.status, row.failure.reason, row.failure.message) == ("failed", "nan", "loss nan")
    assert row.metrics == {}


def test_unknown_study(store: ResultsStore, searched: list) -> None:
    with pytest.raises(UnknownStudy, match="did you mean 'small'"):
        store.validation_trials("smal")


def test_another_process_reads_them(url: str, searched: list, store: ResultsStore) -> None:
    r = searched[0]
    finish(store, r, ValidationKey(r.config_hash, 0, 24), 0.5)
    with ResultsStore(url, create=False, read_only=True) as reader:
        assert [x.metrics["accuracy"] for x in reader.validation_trials("small")] == [0.5]
