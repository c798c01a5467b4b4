"""The results store's tables (the schema at the newest migration; `vs_` keeps them apart from
Optuna's tables, which live in the same database).

    vs_studies  one row per study: its name, the space YAML it ran, status, the stored front
    vs_trials   one row per (study, number): the point, status, steps, failure, timing, Pareto rank
    vs_metrics  (trial, name, final, step) -> value: intermediate reports and final values
    vs_validation_trials  one row per (study, design, seed, steps): a design re-trained at a larger
                budget (`vlmsearch validate`); never part of vs_trials, the sampler or the front
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

PREFIX = "vs_"
TRIAL_STATUSES = ("running", "complete", "pruned", "failed")
VALIDATION_STATUSES = ("running", "complete", "failed")
STUDY_STATUSES = ("running", "finished", "interrupted")
FAILURE_REASONS = ("nan", "oom", "invalid", "error")

NAMING = {"ix": "ix_%(table_name)s_%(column_0_N_name)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
          "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s",
          "pk": "pk_%(table_name)s"}
Json = JSON()  # not JSONB: PostgreSQL's json keeps key order, and an expert's order is part of a design
Timestamp = DateTime(timezone=True)


def one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: Json, datetime: Timestamp}


class Study(Base):
    __tablename__ = "vs_studies"
    __table_args__ = (CheckConstraint(one_of("status", STUDY_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    space_yaml: Mapped[str] = mapped_column(Text)  # what `search_space.parse` reads back
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # backend, sampler, trials, ...
    status: Mapped[str] = mapped_column(String(16), default="running")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # the front as the search last reported it (revision 0002)
    hypervolume: Mapped[float | None] = mapped_column(Float)
    front_finished: Mapped[int | None] = mapped_column(Integer)  # finished trials it covered


class Trial(Base):
    __tablename__ = "vs_trials"
    __table_args__ = (
        UniqueConstraint("study_id", "number"),
        CheckConstraint(one_of("status", TRIAL_STATUSES), name="status"),
        CheckConstraint(f"failure_reason IS NULL OR {one_of('failure_reason', FAILURE_REASONS)}",
                        name="failure_reason"),
        CheckConstraint("number >= 0", name="number"),
        CheckConstraint("steps >= 0", name="steps"),
        Index(None, "study_id", "status"),
        Index(None, "study_id", "pareto_rank"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("vs_studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    config_hash: Mapped[str] = mapped_column(String(64), index=True)
    point: Mapped[dict[str, Any]]  # TrialConfig.canonical(): the design exactly as it ran
    status: Mapped[str] = mapped_column(String(16))
    steps: Mapped[int] = mapped_column(Integer, default=0)
    failure_reason: Mapped[str | None] = mapped_column(String(16))
    failure_message: Mapped[str | None] = mapped_column(Text)
    infeasible: Mapped[bool] = mapped_column(Boolean, default=False)  # rejected before training
    reused_from: Mapped[int | None] = mapped_column(Integer)  # dedup: the trial number it repeats
    host: Mapped[str | None] = mapped_column(String(255))  # where it ran (a Ray node id)
    recorded_by: Mapped[str | None] = mapped_column(String(255))  # "hostname:pid" of the writer
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    pareto_rank: Mapped[int | None] = mapped_column(Integer)  # revision 0002; None: off the ranking


class Metric(Base):
    """A value a trial reported: at `step` while training (final=False) or at its end (final=True,
    step = the steps it ran). NULL is NaN (SQLite cannot store NaN)."""

    __tablename__ = "vs_metrics"

    trial_id: Mapped[int] = mapped_column(ForeignKey("vs_trials.id", ondelete="CASCADE"),
                                          primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    final: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)


studies = Study.__table__
trials = Trial.__table__
metrics = Metric.__table__


class ValidationTrial(Base):
    """A design of the study's search re-trained with one seed at a validation budget (revision
    0003). `metrics` holds the final values (NaN stored as null)."""

    __tablename__ = "vs_validation_trials"
    __table_args__ = (
        UniqueConstraint("study_id", "design_hash", "seed", "steps"),
        UniqueConstraint("study_id", "number"),
        CheckConstraint(one_of("status", VALIDATION_STATUSES), name="status"),
        CheckConstraint(f"failure_reason IS NULL OR {one_of('failure_reason', FAILURE_REASONS)}",
                        name="failure_reason"),
        CheckConstraint("number >= 0", name="number"),
        CheckConstraint("steps > 0", name="steps"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("vs_studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # per study, 0, 1, ... in the order first run
    design_hash: Mapped[str] = mapped_column(String(64), index=True)  # the search design's config_hash
    validates: Mapped[int] = mapped_column(Integer)  # the search trial number of that design
    seed: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    config_hash: Mapped[str] = mapped_column(String(64))  # of the validation point (seed, steps)
    point: Mapped[dict[str, Any]]  # TrialConfig.canonical() of the validation point
    status: Mapped[str] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(String(16))
    failure_message: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(Json)  # final values; NaN -> null
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    recorded_by: Mapped[str | None] = mapped_column(String(255))


validation_trials = ValidationTrial.__table__
