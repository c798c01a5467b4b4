"""The store as a search's sink, and the queries over it, on SQLite and PostgreSQL."""

from __future__ import annotations

import inspect
import json
import math

import optuna
import pytest
from sqlalchemy import func, select

from search_space.events import Front, Sink, Sinks
from search_space.pareto import study_front
from search_space.point import TrialConfig
from search_space.result import TrialResult
from storage import ResultsStore, StorageError, UnknownStudy
from storage.models import metrics, trials
from tests.storage.helpers import LOADED, info, record, result


def front_of(results: list) -> Front:
    """The front as the search driver computes it (search_space.pareto.study_front)."""
    complete = sorted((r for r in results if r.status == "complete"), key=lambda r: r.number)
    ranks, volume = study_front([r.metrics for r in complete], LOADED.space.objectives,
                                LOADED.space.constraints)
    by_number = {r.number: rank for r, rank in zip(complete, ranks, strict=True)}
    for r in results:
        r.pareto_rank = by_number.get(r.number)
    return Front(by_number, volume, len(results))


def rows(store: ResultsStore, table) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def test_is_a_sink_structurally(store: ResultsStore) -> None:
    for name, member in inspect.getmembers(Sink, inspect.isfunction):
        if not name.startswith("_"):
            assert list(inspect.signature(getattr(store, name)).parameters) == \
                list(inspect.signature(member).parameters)[1:], name


def test_records_a_search_and_reads_it_back(store: ResultsStore) -> None:
    sinks = Sinks([store])  # the search's own fan-out, which logs and swallows a sink's errors
    sinks.study_started(info())
    results = [record(sinks, "small", n) for n in range(20)]
    front = front_of(results)
    sinks.front_updated("small", front)
    (summary,) = store.studies()
    assert summary.name == "small" and summary.status == "running" and summary.total == 20
    assert summary.counts == {s: sum(r.status == s for r in results) for s in summary.counts}
    assert summary.hypervolume == pytest.approx(front.hypervolume)
    found = store.trials("small")
    assert [json.dumps(t.to_json()) for t in found] == [json.dumps(r.to_json()) for r in results]
    assert [t.host for t in found] == [r.host for r in results]
    assert all(t.started_at and t.finished_at and t.duration_s is not None for t in found)
    assert store.history("small", 3) == results[3].history
    assert store.space("small") == LOADED.space
    rebuilt = found[0].to_result("small")
    assert rebuilt.config == results[0].config and rebuilt.config_hash == results[0].config_hash
    store.trial_started("small", 20, results[0].config)
    store.study_finished("small", "interrupted")  # what `vlmsearch run` says on Ctrl-C
    assert store.studies()[0].status == "interrupted"
    (left,) = store.trials("small", numbers=[20])
    assert left.status == "failed" and left.failure is not None and "interrupted" in left.failure.message


def test_replays_are_idempotent(store: ResultsStore) -> None:
    store.study_started(info())
    results = [record(store, "small", n) for n in range(12)]
    store.front_updated("small", front_of(results))
    counted = rows(store, trials), rows(store, metrics)
    before = [t.to_json() for t in store.trials("small")]
    again = ResultsStore(store.url)  # a resumed search: a new process replays everything
    again.study_started(info())
    for r in results:
        again.trial_started("small", r.number, r.config)
        again.trial_finished("small", r)
        again.trial_finished("small", r)
    again.front_updated("small", front_of(results))
    assert (rows(again, trials), rows(again, metrics)) == counted
    assert [t.to_json() for t in again.trials("small")] == before
    # a different outcome for a number overwrites it; nothing is duplicated
    changed = result("small", 0, status="failed")
    again.trial_finished("small", changed)
    assert again.trials("small", numbers=[0])[0].to_json()["failure"] == changed.failure.to_json()
    assert rows(again, trials) == counted[0]
    again.close()


def test_expert_order_survives(store: ResultsStore) -> None:
    """The order of experts is part of a design (sequence order, primary first)."""
    base = result("small", 0, status="complete")
    data = base.config.canonical()
    reordered = TrialConfig.model_validate({"name": "small", **data, "experts": {
        "dinov2": {"source": "tiny-dinov2", "tokens": 16}, "clip": {"source": "tiny-clip", "tokens": 4}}})
    store.trial_started("small", 0, reordered)
    store.trial_finished("small", TrialResult(reordered, "complete", 12, base.metrics, study="small",
                                              number=0))
    (t,) = store.trials("small")
    assert list(t.config["experts"]) == ["dinov2", "clip"]
    assert t.to_result("small").config_hash == reordered.config_hash == t.config_hash


def test_filters_by_status_and_metric_bounds(store: ResultsStore) -> None:
    store.study_started(info())
    results = [record(store, "small", n) for n in range(30)]
    complete = [r.number for r in results if r.status == "complete"]
    assert [t.number for t in store.trials("small", status="complete")] == complete
    assert {t.status for t in store.trials("small", status=["pruned", "failed"])} <= {"pruned", "failed"}
    wanted = [r.number for r in results if 0.3 <= r.metrics.get("accuracy", -1) <= 0.7
              and r.metrics.get("visual_tokens", 99) <= 16]
    found = store.trials("small", metric_min={"accuracy": 0.3},
                         metric_max={"accuracy": 0.7, "visual_tokens": 16})
    assert [t.number for t in found] == wanted and wanted


def test_nan_and_counts_come_back_as_reported(store: ResultsStore) -> None:
    store.study_started(info())
    r = result("small", 1, status="complete")
    r.metrics["latency_ms"] = float("nan")
    store.trial_started("small", 1, r.config)
    store.trial_finished("small", r)
    (t,) = store.trials("small")
    assert math.isnan(t.metrics["latency_ms"])
    assert isinstance(t.metrics["visual_tokens"], int) and isinstance(t.metrics["accuracy"], float)


def test_events_without_study_started_still_record(store: ResultsStore) -> None:
    record(store, "late", 0, status="complete")
    assert [s.name for s in store.studies()] == ["late"]
    with pytest.raises(StorageError, match="no stored space"):
        store.pareto_front("late", recompute=True)


def test_unknown_study_suggests(store: ResultsStore) -> None:
    store.study_started(info("small"))
    store.study_started(info("quickstart"))
    suggestion = r"unknown study 'smal'; did you mean 'small'\? known: quickstart, small"
    with pytest.raises(UnknownStudy, match=suggestion):
        store.trials("smal")
    with pytest.raises(UnknownStudy, match=r"unknown study 'zzz'; known: quickstart, small"):
        store.pareto_front("zzz")


def test_coexists_with_optuna_in_one_database(url: str) -> None:
    study = optuna.create_study(storage=url, study_name="small", directions=["maximize", "minimize"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=3)
    with ResultsStore(url) as store:
        store.study_started(info())
        record(store, "small", 0)
        assert [s.name for s in store.studies()] == ["small"]
    assert len(optuna.load_study(study_name="small", storage=url).trials) == 3


def test_a_late_mr_adapter_result_stored_before_reads_as_gated_injection() -> None:
    """Until the faithful operator took the name, `mr_adapter` ran after the cached experts."""
    from search_space import TrialConfig
    from search_space.result import result_from_json
    from storage.queries import StoredTrial

    point = TrialConfig.model_validate({"experts": {"a": {"source": "tiny-clip"},
                                                    "b": {"source": "tiny-dinov2"}},
                                        "fusion": {"kind": "gated_injection"}})
    old = {**point.canonical(), "fusion": {"kind": "mr_adapter"}}  # as it was stored
    stored = StoredTrial("s", 0, "0123456789abcdef", "complete", 4, old)
    assert stored.to_result().config.fusion.kind == "gated_injection"
    assert stored.to_json()["config"] == old  # the stored row itself is shown as written
    assert result_from_json(stored.to_json(), "t").config == point.model_copy(update={"name": "t"})
