"""Validation trials in the store (`vs_validation_trials`): a design of a study re-trained with one
seed at a larger budget (`vlmsearch validate`). They are kept apart from `vs_trials`, so the
search's results, sampler and front never see them; `validation_trials(study)` is what the CLI,
the API and the report read.

Identity is (study, design, seed, steps): starting one that is complete already changes nothing,
starting one left running or failed runs it again under the same number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from search_space import Failure, TrialConfig, TrialResult
from storage.models import validation_trials as table

INTERRUPTED = "the validation was interrupted before this trial finished; run the same command again"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def _json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}


@dataclass(frozen=True)
class ValidationKey:
    """Which validation trial: the search design (its config hash), a seed, a budget."""

    design_hash: str
    seed: int
    steps: int


@dataclass(frozen=True)
class ValidationRow:
    """One stored validation trial (metrics: final values; a stored null reads as NaN)."""

    study: str
    number: int
    design_hash: str
    validates: int  # the search trial number of the design
    seed: int
    steps: int
    config_hash: str
    config: dict[str, Any]
    status: str  # running | complete | failed
    metrics: dict[str, float]
    failure: Failure | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    recorded_by: str | None = None

    @property
    def key(self) -> ValidationKey:
        return ValidationKey(self.design_hash, self.seed, self.steps)

    def to_json(self) -> dict[str, Any]:
        return {"study": self.study, "number": self.number, "design_hash": self.design_hash,
                "validates": self.validates, "seed": self.seed, "steps": self.steps,
                "config_hash": self.config_hash, "status": self.status,
                "failure": self.failure.to_json() if self.failure else None,
                "metrics": _json_metrics(self.metrics), "duration_s": self.duration_s,
                "config": self.config}


class ValidationRecords:
    """Mixed into `ResultsStore` (needs its engine, writer, study ids and recorder)."""

    engine: Engine
    _write: Engine
    _study_id: Any  # (name) -> id, ResultsStore's
    study_row: Any  # (name) -> row or UnknownStudy, Queries'
    recorder: Any  # "host:pid"

    def validation_started(self, study: str, key: ValidationKey, validates: int, point: TrialConfig) -> int:
        """Record `point` (the design at `key`'s seed and budget) as running; its number. One that
        is complete already is left as it is."""
        study_id, now = self._study_id(study), _now()
        fields = {"validates": validates, "config_hash": point.config_hash, "point": point.canonical(),
                  "status": "running", "failure_reason": None, "failure_message": None, "metrics": None,
                  "started_at": now, "finished_at": None, "duration_s": None,
                  "recorded_by": self.recorder}
        with self._write.begin() as connection:
            found = _find(connection, study_id, key)
            if found is None:
                number = connection.execute(select(func.coalesce(func.max(table.c.number) + 1, 0)).where(
                    table.c.study_id == study_id)).scalar_one()
                connection.execute(insert(table).values(
                    study_id=study_id, number=number, design_hash=key.design_hash, seed=key.seed,
                    steps=key.steps, **fields))
                return int(number)
            if found.status != "complete":
                connection.execute(update(table).where(table.c.id == found.id).values(**fields))
            return int(found.number)

    def validation_finished(self, study: str, key: ValidationKey, result: TrialResult) -> None:
        """Its final status (a pruned result counts as failed: nothing prunes a validation),
        metrics and duration."""
        study_id, now = self._study_id(study), _now()
        failure = result.failure or (None if result.status == "complete" else
                                     Failure("error", f"the trial ended {result.status}"))
        with self._write.begin() as connection:
            found = _find(connection, study_id, key)
            if found is None:
                raise KeyError(f"validation trial {key} of study '{study}' was never started")
            started = _aware(found.started_at)
            connection.execute(update(table).where(table.c.id == found.id).values(
                status="complete" if failure is None else "failed",
                failure_reason=failure.reason if failure else None,
                failure_message=failure.message if failure else None,
                metrics=_json_metrics(dict(result.metrics)), finished_at=now,
                duration_s=(now - started).total_seconds() if started else None))

    def validations_interrupted(self, study: str) -> int:
        """This process's running validation trials are failed (a rerun trains them again); how many."""
        study_id = self._study_id(study)
        with self._write.begin() as connection:
            done = connection.execute(update(table).where(
                table.c.study_id == study_id, table.c.status == "running",
                table.c.recorded_by == self.recorder).values(
                status="failed", failure_reason="error", failure_message=INTERRUPTED, finished_at=_now()))
            return int(done.rowcount or 0)

    def validation_trials(self, study: str, *, status: str | None = None) -> list[ValidationRow]:
        """The study's validation trials by number (`UnknownStudy` for an unknown study)."""
        row = self.study_row(study)
        query = select(table).where(table.c.study_id == row.id).order_by(table.c.number)
        if status is not None:
            query = query.where(table.c.status == status)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [ValidationRow(
            study=study, number=r.number, design_hash=r.design_hash, validates=r.validates, seed=r.seed,
            steps=r.steps, config_hash=r.config_hash, config=r.point, status=r.status,
            metrics={k: math.nan if v is None else v for k, v in (r.metrics or {}).items()},
            failure=Failure(r.failure_reason, r.failure_message or "") if r.failure_reason else None,
            started_at=_aware(r.started_at), finished_at=_aware(r.finished_at), duration_s=r.duration_s,
            recorded_by=r.recorded_by) for r in rows]


def _find(connection: Connection, study_id: int, key: ValidationKey) -> Any:
    return connection.execute(select(table.c.id, table.c.number, table.c.status, table.c.started_at).where(
        table.c.study_id == study_id, table.c.design_hash == key.design_hash, table.c.seed == key.seed,
        table.c.steps == key.steps)).first()
