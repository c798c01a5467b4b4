"""Reading back what a study left in MLflow, and comparing it with the results store."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from mlflow.tracking import MlflowClient

from search_space import compile_space, parse
from search_space.result import TrialResult
from search_space.sampling import RandomDraw
from storage import ResultsStore


@dataclass
class Logged:
    parents: list[Any]
    children: list[Any]

    @property
    def by_number(self) -> dict[int, Any]:
        return {int(r.data.tags["vlmsearch.trial"]): r for r in self.children}

    def numbers(self) -> Counter[int]:
        return Counter(int(r.data.tags["vlmsearch.trial"]) for r in self.children)

    def pareto(self) -> set[int]:
        return {n for n, r in self.by_number.items() if r.data.tags.get("is_pareto") == "true"}


def logged(tracking: str, study: str = "small") -> Logged:
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    kinds = [r.data.tags.get("vlmsearch.kind") for r in runs]
    assert set(kinds) <= {"study", "trial"}, kinds
    return Logged([r for r in runs if r.data.tags.get("vlmsearch.kind") == "study"],
                  [r for r in runs if r.data.tags.get("vlmsearch.kind") == "trial"])


def assert_mirrors_store(tracking: str, storage: str, study: str = "small",
                         token_limit: float = 24) -> Logged:
    """One parent; one child per finished trial of the store, with the store's status, steps,
    config hash and Pareto membership; every child points to the parent and is terminated."""
    seen = logged(tracking, study)
    with ResultsStore(storage, create=False) as store:
        stored = {t.number: t for t in store.trials(study)}
        front = {t.number for t in store.pareto_front(study).trials}
    assert len(seen.parents) == 1
    parent = seen.parents[0].info.run_id
    assert seen.numbers() == Counter(list(stored)), "exactly one run per trial"
    status = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}
    for number, run in seen.by_number.items():
        trial, tags = stored[number], run.data.tags
        assert tags["mlflow.parentRunId"] == parent
        assert tags["status"] == trial.status
        assert tags["steps"] == str(trial.steps)
        assert tags["config_hash"] == trial.config_hash
        assert tags["vlmsearch.synced"] == "true"
        assert run.info.status == status[trial.status]
        assert tags["is_pareto"] == ("true" if number in front else "false")
        assert tags["pareto_rank"] == (str(trial.pareto_rank) if trial.status == "complete"
                                       and trial.pareto_rank is not None else "none")
        feasible = trial.status != "failed" and trial.metrics.get("visual_tokens", 0) <= token_limit
        assert tags["feasible"] == str(feasible).lower()
        for name in ("accuracy", "visual_tokens"):
            if name in trial.metrics:
                assert run.data.metrics[name] == trial.metrics[name]
    assert seen.pareto() == front and front
    return seen


def assert_one_run_per_trial_none_running(tracking: str, storage: str, study: str = "small") -> Logged:
    """After a killed or interrupted search and its resume: MLflow holds exactly the store's trials,
    once each, no run is left RUNNING, and `is_pareto` marks the store's front."""
    seen = logged(tracking, study)
    with ResultsStore(storage, create=False) as store:
        stored = {t.number: t for t in store.trials(study)}
        front = {t.number for t in store.pareto_front(study).trials}
    assert len(seen.parents) == 1 and seen.parents[0].info.status == "FINISHED"
    assert seen.numbers() == Counter(list(stored)), "exactly one run per trial"
    assert not [r.info.run_name for r in seen.children if r.info.status == "RUNNING"]
    assert {n: r.data.tags["status"] for n, r in seen.by_number.items()} == \
        {n: t.status for n, t in stored.items()}
    assert seen.pareto() == front
    return seen


def sample_results(space_text: str) -> list[TrialResult]:
    """Three complete results of distinct sampled points; the third dominates the first two."""
    compiled = compile_space(parse(space_text).space)
    points, seed = [], 0
    while len(points) < 3:
        point = compiled.sample(RandomDraw(seed))
        seed += 1
        if point.config_hash not in {p.config_hash for p in points}:
            points.append(point)
    values = [(0.30, 16), (0.20, 4), (0.35, 4)]
    return [TrialResult(p, "complete", 12, {"accuracy": a, "visual_tokens": t},
                        history=[(4, {"accuracy": a / 2, "visual_tokens": t})], study="small", number=i)
            for i, (p, (a, t)) in enumerate(zip(points, values, strict=True))]
