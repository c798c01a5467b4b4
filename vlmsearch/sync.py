"""`vlmsearch sync`: make MLflow hold what the results store holds for a study.

A search logs to MLflow as it goes; what it could not log (the tracking server was down, the
search was killed) is in the results store. Sync replays the study from there through the same
idempotent tracker the search uses: missing runs are created, unfinished ones completed, tags and
the front brought up to date; runs that are already complete are left as they are, and a trial
logged twice keeps one run (the other is deleted, which MLflow can undo).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class SyncReport:
    study: str
    trials: int  # finished trials in the store
    logged: int  # of them, runs created or completed now
    unchanged: int
    running: int  # still running in the store: logged when their search finishes them
    duplicates_deleted: int
    orphans_terminated: int
    experiment_id: str
    parent_id: str

    def describe(self) -> str:
        parts = [f"study '{self.study}': {self.trials} finished trial(s); {self.logged} logged now, "
                 f"{self.unchanged} already in MLflow"]
        if self.running:
            parts.append(f"{self.running} still running (not logged yet)")
        if self.duplicates_deleted:
            parts.append(f"{self.duplicates_deleted} duplicate run(s) deleted")
        if self.orphans_terminated:
            parts.append(f"{self.orphans_terminated} run(s) of a stopped search marked failed")
        return "; ".join(parts)


def sync_study(store: Any, study: str, uri: str) -> SyncReport:
    """`store`: an open `ResultsStore`. Raises `UnknownStudy` / `StorageError` from the store and
    whatever MLflow raises when it cannot be reached."""
    from dashboard import StudyTracker, open_client
    from storage import TERMINAL

    row = store.study_row(study)
    space = store.space(study)
    tracker = StudyTracker.on(open_client(uri), uri, study)
    opened = tracker.open(space, row.space_yaml, row.settings or {})
    synced_before = {n for n, c in tracker.children.items() if c.synced}
    stored = store.trials(study)
    finished = [t for t in stored if t.status in TERMINAL]
    for trial in finished:
        result = replace(trial.to_result(space.name), history=store.history(study, trial.number))
        tracker.finish_trial(result)
    ranks, volume = store.ranks(study)
    tracker.update_front(ranks, volume, len(finished))
    missed = set(range(1, len(finished) + 1)) - tracker.hypervolume_steps  # e.g. during an outage
    tracker.log_front_history(store.front_history(study, missed))
    if row.status != "running":
        tracker.close(row.status)
    logged = sum(1 for t in finished if t.number not in synced_before)
    return SyncReport(study, len(finished), logged, len(finished) - logged,
                      sum(1 for t in stored if t.status == "running"), opened.duplicates_deleted,
                      opened.orphans_terminated, tracker.experiment_id, tracker.parent_id)
