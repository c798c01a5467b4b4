"""Reading the store: studies with counts per status, trials with filters, the Pareto front.

The front is stored as the search reports it (each trial's rank), so `results --pareto` is a
query. When the stored front is stale (it covered fewer finished trials than the study holds: an
older schema, or several searches writing one study) it is recomputed from the stored final
metrics with `search_space.pareto.study_front`, exactly as the search computes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Row, Select, and_, exists, func, select

from common import redact_url
from search_space import Failure, SearchSpace, TrialConfig, TrialResult, did_you_mean, stored_design
from storage.engine import StorageError
from storage.models import TRIAL_STATUSES, metrics, studies, trials

TERMINAL = ("complete", "pruned", "failed")
COUNTS = ("visual_tokens", "positions_used", "trainable_params", "total_params")  # integers by definition


class UnknownStudy(StorageError):
    """`unknown study 'smal'; did you mean 'small'? known: quickstart, small`."""

    def __init__(self, name: str, known: list[str], url: str) -> None:
        self.name, self.known = name, known
        hint = did_you_mean(name, known)
        if known:
            message = f"unknown study '{name}'{hint}{' ' if hint else '; '}known: {', '.join(sorted(known))}"
        else:
            message = f"unknown study '{name}'; no studies in {redact_url(url)}"
        super().__init__(message)


@dataclass(frozen=True)
class StudySummary:
    name: str
    status: str
    created_at: datetime
    updated_at: datetime
    counts: dict[str, int]  # per trial status, every status present (0 when none)
    hypervolume: float | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class _StoredPoint:
    """The stored canonical design, in the shape `TrialResult.to_json` reads (no re-validation:
    the JSON is exactly what ran, under the hash it ran with)."""

    def __init__(self, config: dict[str, Any], config_hash: str) -> None:
        self._config, self.config_hash = config, config_hash

    def canonical(self) -> dict[str, Any]:
        return self._config


@dataclass
class StoredTrial:
    study: str
    number: int
    config_hash: str
    status: str
    steps: int
    config: dict[str, Any]  # TrialConfig.canonical()
    metrics: dict[str, float] = field(default_factory=dict)  # final values
    failure: Failure | None = None
    pareto_rank: int | None = None
    reused_from: int | None = None
    host: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None

    def _result(self, config: Any) -> TrialResult:
        return TrialResult(config, self.status, self.steps, dict(self.metrics),  # type: ignore[arg-type]
                           self.failure, study=self.study, number=self.number, pareto_rank=self.pareto_rank,
                           reused_from=self.reused_from, host=self.host)

    def to_json(self) -> dict[str, Any]:
        """The trial JSON of CONTRACT.md (what `vlmsearch trial --json` prints)."""
        return self._result(_StoredPoint(self.config, self.config_hash)).to_json()

    def to_result(self, name: str = "trial") -> TrialResult:
        """A `TrialResult` with a validated `TrialConfig` named `name`."""
        return self._result(TrialConfig.model_validate({"name": name, **stored_design(self.config)}))


@dataclass(frozen=True)
class ParetoFront:
    trials: list[StoredTrial]  # rank 0, sorted by the objectives (first objective best first)
    hypervolume: float
    recomputed: bool  # False: read from the stored ranks


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _typed(name: str, value: float | None) -> float:
    """The stored value as reported: NULL is NaN, and counts come back as ints (80, not 80.0)."""
    if value is not None and name in COUNTS and float(value).is_integer():
        return int(value)  # type: ignore[return-value]
    return _nan(value)


class Queries:
    """Mixed into `ResultsStore`; needs `engine` and `url`."""

    engine: Engine
    url: str
    _spaces: dict[int, Any]

    def study_names(self) -> list[str]:
        with self.engine.connect() as connection:
            return list(connection.execute(select(studies.c.name).order_by(studies.c.name)).scalars())

    def studies(self) -> list[StudySummary]:
        """Every study, oldest first, with its trial counts per status."""
        with self.engine.connect() as connection:
            counts: dict[int, dict[str, int]] = {}
            for study_id, status, n in connection.execute(
                    select(trials.c.study_id, trials.c.status, func.count()).group_by(
                        trials.c.study_id, trials.c.status)):
                counts.setdefault(study_id, {})[status] = n
            rows = connection.execute(select(studies).order_by(studies.c.created_at, studies.c.id)).all()
        return [StudySummary(r.name, r.status, _aware(r.created_at), _aware(r.updated_at),  # type: ignore[arg-type]
                             {s: counts.get(r.id, {}).get(s, 0) for s in TRIAL_STATUSES}, r.hypervolume)
                for r in rows]

    def summary(self, name: str) -> StudySummary:
        row = self.study_row(name)
        return next(s for s in self.studies() if s.name == row.name)

    def study_row(self, name: str) -> Row[Any]:
        """The study's row; `UnknownStudy` (with a did-you-mean) when there is none."""
        with self.engine.connect() as connection:
            row = connection.execute(select(studies).where(studies.c.name == name)).first()
        if row is None:
            raise UnknownStudy(name, self.study_names(), self.url)
        return row

    def space(self, name: str) -> SearchSpace:
        """The space the study ran (parsed from its stored YAML)."""
        row = self.study_row(name)
        if row.id not in self._spaces:
            from search_space import SpaceError, parse

            if not row.space_yaml.strip():
                raise StorageError(f"study '{name}' has no stored space, so its front cannot be computed")
            try:
                base = (row.settings or {}).get("space_dir")  # relative `source:` folders: beside the YAML
                self._spaces[row.id] = parse(row.space_yaml, f"<study {name}>",
                                             Path(base) if base else None).space
            except SpaceError as exc:
                raise StorageError(f"study '{name}': its stored space no longer parses: {exc}") from None
        return self._spaces[row.id]

    def trials(self, study: str, *, status: str | Iterable[str] | None = None,
               metric_min: Mapping[str, float] | None = None, metric_max: Mapping[str, float] | None = None,
               numbers: Iterable[int] | None = None) -> list[StoredTrial]:
        """Trials of `study` by number, filtered by status and by bounds on final metrics; ranks are
        the current front's (recomputed when the stored front is stale)."""
        row = self.study_row(study)
        query = select(trials).where(trials.c.study_id == row.id).order_by(trials.c.number)
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            query = query.where(trials.c.status.in_(wanted))
        if numbers is not None:
            query = query.where(trials.c.number.in_(list(numbers)))
        for name, bound in (metric_min or {}).items():
            query = query.where(_final(name, metrics.c.value >= bound))
        for name, bound in (metric_max or {}).items():
            query = query.where(_final(name, metrics.c.value <= bound))
        found = self._load(study, query)
        if not self._front_is_fresh(row):
            try:
                ranks, _ = self._recompute(study, row)
            except StorageError:  # no usable stored space: the stored ranks are all there is
                return found
            for trial in found:
                trial.pareto_rank = ranks.get(trial.number)
        return found

    def history(self, study: str, number: int) -> list[tuple[int, dict[str, float]]]:
        """What trial `number` reported while it trained: (step, metrics), by step."""
        row = self.study_row(study)
        steps: dict[int, dict[str, float]] = {}
        with self.engine.connect() as connection:
            for step, name, value in connection.execute(
                    select(metrics.c.step, metrics.c.name, metrics.c.value)
                    .join(trials, trials.c.id == metrics.c.trial_id)
                    .where(trials.c.study_id == row.id, trials.c.number == number, ~metrics.c.final)
                    .order_by(metrics.c.step, metrics.c.name)):
                steps.setdefault(step, {})[name] = _typed(name, value)
        return sorted(steps.items())

    def ranks(self, study: str, *, recompute: bool = False) -> tuple[dict[int, int | None], float]:
        """Pareto rank per complete trial (None: infeasible), as `Front.ranks`, and the hypervolume."""
        row = self.study_row(study)
        if recompute or not self._front_is_fresh(row):
            return self._recompute(study, row)
        with self.engine.connect() as connection:
            stored = connection.execute(select(trials.c.number, trials.c.pareto_rank).where(
                trials.c.study_id == row.id, trials.c.status == "complete")).all()
        return {n: r for n, r in stored}, float(row.hypervolume or 0.0)

    def pareto_front(self, study: str, *, recompute: bool = False) -> ParetoFront:
        """The feasible non-dominated trials (rank 0): a query on the stored ranks, or recomputed."""
        row = self.study_row(study)
        fresh = self._front_is_fresh(row) and not recompute
        if fresh:
            front = self._load(study, select(trials).where(trials.c.study_id == row.id,
                                                           trials.c.pareto_rank == 0))
            volume = float(row.hypervolume or 0.0)
        else:
            ranks, volume = self._recompute(study, row)
            best = [n for n, r in ranks.items() if r == 0]
            front = self._load(study, select(trials).where(trials.c.study_id == row.id,
                                                           trials.c.number.in_(best))) if best else []
            for trial in front:
                trial.pareto_rank = 0
        objectives = self.space(study).objectives if front else []
        front.sort(key=lambda t: ([t.metrics.get(o.metric, float("nan")) * (-1 if o.direction == "maximize"
                                                                          else 1) for o in objectives],
                                  t.number))
        return ParetoFront(front, volume, not fresh)

    # ---- helpers -----------------------------------------------------------------------------

    def _front_is_fresh(self, row: Row[Any]) -> bool:
        if row.front_finished is None:
            return False
        with self.engine.connect() as connection:
            finished = connection.execute(select(func.count()).select_from(trials).where(
                trials.c.study_id == row.id, trials.c.status.in_(TERMINAL))).scalar_one()
        return finished == row.front_finished

    def _recompute(self, study: str, row: Row[Any]) -> tuple[dict[int, int | None], float]:
        with self.engine.connect() as connection:
            values = connection.execute(
                select(trials.c.number, metrics.c.name, metrics.c.value)
                .join(metrics, and_(metrics.c.trial_id == trials.c.id, metrics.c.final))
                .where(trials.c.study_id == row.id, trials.c.status == "complete",
                       trials.c.reused_from.is_(None))).all()
            complete = connection.execute(select(trials.c.number).where(  # a dedup hit: as its original
                trials.c.study_id == row.id, trials.c.status == "complete",
                trials.c.reused_from.is_(None))).scalars().all()
        by_number: dict[int, dict[str, float]] = {n: {} for n in complete}
        for number, name, value in values:
            by_number[number][name] = _nan(value)
        return _front(*self._frame(study), by_number)

    def _frame(self, study: str) -> tuple[Any, dict[str, float]]:
        """The study's space and its hypervolume reference bounds, as the search computes them."""
        from search_space import compile_space, space_cost_range

        space = self.space(study)
        return space, space_cost_range(compile_space(space)).reference_bounds()

    def front_history(self, study: str, steps: Iterable[int]) -> dict[int, tuple[float, int]]:
        """(hypervolume, front size) after the first k finished trials, in the order they finished,
        for each k in `steps` (what a search logged as it went, recomputed)."""
        never = datetime.min.replace(tzinfo=timezone.utc)
        finished = sorted(self.trials(study, status=TERMINAL),
                          key=lambda t: (t.finished_at is None, t.finished_at or never, t.number))
        out, frame = {}, self._frame(study)
        for k in sorted(set(steps)):
            if 1 <= k <= len(finished):
                first = {t.number: t.metrics for t in finished[:k] if t.status == "complete"}
                ranks, volume = _front(*frame, first)
                out[k] = (volume, sum(1 for r in ranks.values() if r == 0))
        return out

    def _load(self, study: str, query: Select[Any]) -> list[StoredTrial]:
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
            ids = query.with_only_columns(trials.c.id).order_by(None).subquery()
            values: dict[int, dict[str, float]] = {}
            for trial_id, name, value in connection.execute(
                    select(metrics.c.trial_id, metrics.c.name, metrics.c.value)
                    .where(metrics.c.final, metrics.c.trial_id.in_(select(ids.c.id)))
                    .order_by(metrics.c.trial_id, metrics.c.name)):
                values.setdefault(trial_id, {})[name] = _typed(name, value)
        return [StoredTrial(
            study=study, number=r.number, config_hash=r.config_hash, status=r.status, steps=r.steps,
            config=r.point, metrics=values.get(r.id, {}),
            failure=Failure(r.failure_reason, r.failure_message or "", bool(r.infeasible))
            if r.failure_reason else None,
            pareto_rank=r.pareto_rank, reused_from=r.reused_from, host=r.host,
            started_at=_aware(r.started_at), finished_at=_aware(r.finished_at), duration_s=r.duration_s)
            for r in rows]


def _final(name: str, condition: Any) -> Any:
    return exists().where(metrics.c.trial_id == trials.c.id, metrics.c.final, metrics.c.name == name,
                          condition)


def _front(space: Any, bounds: Mapping[str, float], by_number: Mapping[int, Mapping[str, float]]
           ) -> tuple[dict[int, int | None], float]:
    """Ranks and hypervolume of these complete trials' final metrics, as the search computes them."""
    from search_space import study_front

    numbers = sorted(by_number)
    ranks, volume = study_front([by_number[n] for n in numbers], space.objectives, space.constraints,
                                bounds)
    return dict(zip(numbers, ranks, strict=True)), volume
