"""`ResultsStore`: the sink that records a search as it runs, and (from `Queries`) what it holds.

It implements the sink protocol of `trials.search.sinks` structurally (storage never imports
trials). Every event is one short transaction. Events are idempotent on (study, number): a
resumed search replays its finished trials, and a trial already recorded as finished with the
same status, steps and config hash is skipped; anything else overwrites the record.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from common import STOPPED, Backoff, recorder_gone, recorder_id, redact_secrets, redact_url
from search_space import Ending, Front, StudyInfo, TrialConfig, TrialResult
from storage import migrate
from storage.engine import DEFAULT_STORAGE, StorageError, make_engine, sqlite_file, writer
from storage.models import metrics as metric_rows
from storage.models import studies, trials
from storage.queries import Queries
from storage.schema import Owner, refuse_foreign, refuse_non_sqlite
from storage.validation import ValidationRecords

log = logging.getLogger(__name__)
TERMINAL = ("complete", "pruned", "failed")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _value(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value  # NULL is NaN (SQLite turns NaN into NULL anyway)


def _upsert(connection: Connection, table: Any) -> Any:
    """INSERT ... ON CONFLICT for the connection's backend."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def _waits(event: Callable[..., None]) -> Callable[..., None]:
    """A sink event waits out a locked or briefly unreachable database (its writes are
    idempotent, so a retry after a lost connection records nothing twice)."""

    @functools.wraps(event)
    def waiting(self: ResultsStore, *args: Any) -> None:
        self.backoff.call(lambda: event(self, *args))

    return waiting


class ResultsStore(Queries, ValidationRecords):
    """The SQL results store on `url` (SQLite file or PostgreSQL); migrated to the newest schema
    when opened. Not shared across processes: each process opens its own."""

    def __init__(self, url: str = DEFAULT_STORAGE, *, create: bool = True, upgrade: bool = True,
                 read_only: bool = False) -> None:
        """`read_only` (what `studies`, `results` and `sync` use): a SQLite file is opened so that
        nothing in it can change, and a database with no results store is left as it is
        (`holds_results` False). Another program's database is refused (storage/schema.py)."""
        self.url = url
        found, behind = _inspect(url)
        self.holds_results = found is Owner.VLMSEARCH or not read_only
        # vlmsearch's own store from an older version is brought up to date even by a read
        self.engine = make_engine(url, create=create, read_only=read_only and not behind)
        if self.engine.dialect.name not in ("sqlite", "postgresql"):
            raise StorageError(f"storage {redact_url(url)}: the results store runs on SQLite or PostgreSQL, "
                               f"not {self.engine.dialect.name}")
        upgrade = upgrade and self.holds_results
        self._write = writer(self.engine)
        self._study_ids: dict[str, int] = {}
        self._trial_ids: dict[tuple[int, int], int] = {}
        self._started: dict[tuple[int, int], datetime] = {}
        self._finished: dict[int, dict[int, tuple[str, int, str]]] = {}  # what is recorded as done
        self._ranks: dict[int, dict[int, int | None]] = {}  # the ranks last written
        self._spaces: dict[int, Any] = {}
        self.backoff = Backoff(f"the results store ({redact_url(url)})", log.warning)
        with self.guard():
            self.revision = migrate.upgrade(self.engine) if upgrade else None

    def guard(self) -> _Guard:
        """Database errors -> StorageError naming the store (password hidden)."""
        return _Guard(self.url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def recorder(self) -> str:
        return recorder_id()

    # ---- sink events ------------------------------------------------------------------------

    @_waits
    def study_started(self, study: StudyInfo) -> None:
        """`study`: a `StudyInfo` (name, space_yaml, settings)."""
        now = utcnow()
        with self._write.begin() as connection:
            statement = _upsert(connection, studies).values(
                name=study.name, space_yaml=study.space_yaml, settings=dict(study.settings),
                status="running", created_at=now, updated_at=now)
            connection.execute(statement.on_conflict_do_update(
                index_elements=[studies.c.name],
                set_={"space_yaml": statement.excluded.space_yaml, "settings": statement.excluded.settings,
                      "status": "running", "updated_at": now}))
            study_id = connection.execute(
                select(studies.c.id).where(studies.c.name == study.name)).scalar_one()
            self._study_ids[study.name] = study_id
            self._fail_orphans(connection, study_id)
            self._load_state(connection, study_id)

    @_waits
    def trial_started(self, study: str, number: int, point: TrialConfig) -> None:
        study_id, now = self._study_id(study), utcnow()
        with self._write.begin() as connection:
            statement = _upsert(connection, trials).values(
                study_id=study_id, number=number, config_hash=point.config_hash, point=point.canonical(),
                status="running", steps=0, infeasible=False, recorded_by=self.recorder, started_at=now)
            connection.execute(statement.on_conflict_do_update(
                index_elements=[trials.c.study_id, trials.c.number],
                set_={"config_hash": statement.excluded.config_hash, "point": statement.excluded.point,
                      "recorded_by": statement.excluded.recorded_by, "started_at": now},
                where=trials.c.status == "running"))  # a finished trial is never set running again
        self._started[(study_id, number)] = now

    @_waits
    def trial_intermediate(self, study: str, number: int, step: int, metrics: dict[str, float]) -> None:
        study_id = self._study_id(study)
        with self._write.begin() as connection:
            trial_id = self._trial_id(connection, study_id, number)
            if trial_id is None:
                log.warning("study '%s': trial %d reported step %d before it started; not recorded",
                            study, number, step)
                return
            self._insert_history(connection, trial_id, [(step, metrics)], overwrite=True)
            connection.execute(update(trials).where(trials.c.id == trial_id, trials.c.status == "running",
                                                    trials.c.steps < step).values(steps=step))

    @_waits
    def trial_finished(self, study: str, result: TrialResult) -> None:
        if result.number is None:
            log.warning("study '%s': a result without a trial number; not recorded", study)
            return
        study_id, number = self._study_id(study), result.number
        signature = (result.status, result.steps, result.config_hash)
        done = self._finished.setdefault(study_id, {})
        if done.get(number) == signature:
            return  # a replay of what is recorded
        now, started = utcnow(), self._started.get((study_id, number))
        row = {"study_id": study_id, "number": number, "config_hash": result.config_hash,
               "point": result.config.canonical(), "status": result.status, "steps": result.steps,
               "failure_reason": result.failure.reason if result.failure else None,
               "failure_message": result.failure.message if result.failure else None,
               "infeasible": bool(result.failure and result.failure.infeasible),
               "reused_from": result.reused_from, "host": result.host, "recorded_by": self.recorder,
               "started_at": started, "finished_at": now, "pareto_rank": result.pareto_rank,
               "duration_s": (now - started).total_seconds() if started else None}
        with self._write.begin() as connection:
            statement = _upsert(connection, trials).values(**row)
            kept = {"started_at": func.coalesce(trials.c.started_at, statement.excluded.started_at),
                    "duration_s": func.coalesce(statement.excluded.duration_s, trials.c.duration_s)}
            overwrite = {k: statement.excluded[k] for k in row if k not in ("study_id", "number", *kept)}
            trial_id = connection.execute(statement.on_conflict_do_update(
                index_elements=[trials.c.study_id, trials.c.number], set_={**overwrite, **kept}
            ).returning(trials.c.id)).scalar_one()
            connection.execute(delete(metric_rows).where(metric_rows.c.trial_id == trial_id,
                                                         metric_rows.c.final))
            if result.metrics:
                connection.execute(insert(metric_rows), [
                    {"trial_id": trial_id, "name": name, "final": True, "step": result.steps,
                     "value": _value(value)} for name, value in result.metrics.items()])
            self._insert_history(connection, trial_id, result.history, overwrite=False)
        self._trial_ids[(study_id, number)] = trial_id
        done[number] = signature
        self._ranks.setdefault(study_id, {})[number] = result.pareto_rank

    @_waits
    def front_updated(self, study: str, front: Front) -> None:
        """`front`: ranks per trial number (None: infeasible), hypervolume, finished count. Writes
        only the ranks that changed."""
        study_id = self._study_id(study)
        known = self._ranks.setdefault(study_id, {})
        ranks = {int(n): (None if r is None else int(r)) for n, r in front.ranks.items()}
        changed = {n: r for n, r in ranks.items() if n not in known or known[n] != r}
        changed.update({n: None for n, r in known.items() if r is not None and n not in ranks})
        with self._write.begin() as connection:
            if changed:
                connection.execute(
                    update(trials).where(trials.c.study_id == bindparam("b_study"),
                                         trials.c.number == bindparam("b_number"))
                    .values(pareto_rank=bindparam("b_rank")),
                    [{"b_study": study_id, "b_number": n, "b_rank": r} for n, r in changed.items()])
            connection.execute(update(studies).where(studies.c.id == study_id).values(
                hypervolume=float(front.hypervolume), front_finished=int(front.finished),
                updated_at=utcnow()))
        known.update(changed)

    @_waits
    def study_finished(self, study: str, status: Ending = "finished") -> None:
        """Not a sink event: the caller of the search says how it ended (finished, interrupted).
        Trials this process recorded as running are failed (the search re-queues them itself)."""
        study_id, now = self._study_id(study), utcnow()
        with self._write.begin() as connection:
            connection.execute(update(studies).where(studies.c.id == study_id)
                               .values(status=status, updated_at=now))
            connection.execute(update(trials).where(
                trials.c.study_id == study_id, trials.c.status == "running",
                trials.c.recorded_by == self.recorder).values(
                status="failed", failure_reason="error", finished_at=now,
                failure_message=f"the search was {status} before the trial finished"))

    # ---- helpers -----------------------------------------------------------------------------

    def _study_id(self, name: str) -> int:
        if name not in self._study_ids:
            with self._write.begin() as connection:  # events without study_started: a bare record
                now = utcnow()
                connection.execute(_upsert(connection, studies).values(
                    name=name, space_yaml="", settings={}, status="running", created_at=now,
                    updated_at=now).on_conflict_do_nothing(index_elements=[studies.c.name]))
                self._study_ids[name] = connection.execute(
                    select(studies.c.id).where(studies.c.name == name)).scalar_one()
                self._load_state(connection, self._study_ids[name])
        return self._study_ids[name]

    def _trial_id(self, connection: Connection, study_id: int, number: int) -> int | None:
        key = (study_id, number)
        if key not in self._trial_ids:
            found = connection.execute(select(trials.c.id).where(
                trials.c.study_id == study_id, trials.c.number == number)).scalar_one_or_none()
            if found is None:
                return None
            self._trial_ids[key] = found
        return self._trial_ids[key]

    def _insert_history(self, connection: Connection, trial_id: int,
                        history: list[tuple[int, dict[str, float]]], *, overwrite: bool) -> None:
        rows = [{"trial_id": trial_id, "name": name, "final": False, "step": int(step), "value": _value(v)}
                for step, values in history for name, v in values.items()]
        if not rows:
            return
        statement = _upsert(connection, metric_rows)
        keys = [metric_rows.c.trial_id, metric_rows.c.name, metric_rows.c.final, metric_rows.c.step]
        if overwrite:
            statement = statement.on_conflict_do_update(index_elements=keys,
                                                        set_={"value": statement.excluded.value})
        else:
            statement = statement.on_conflict_do_nothing(index_elements=keys)
        connection.execute(statement, rows)

    def _load_state(self, connection: Connection, study_id: int) -> None:
        """What this study holds already (a resumed search replays it: nothing to write twice)."""
        rows = connection.execute(select(trials.c.id, trials.c.number, trials.c.status, trials.c.steps,
                                         trials.c.config_hash, trials.c.pareto_rank)
                                  .where(trials.c.study_id == study_id)).all()
        self._finished[study_id] = {r.number: (r.status, r.steps, r.config_hash) for r in rows
                                    if r.status in TERMINAL}
        self._ranks[study_id] = {r.number: r.pareto_rank for r in rows}
        self._trial_ids.update({(study_id, r.number): r.id for r in rows})

    def _fail_orphans(self, connection: Connection, study_id: int) -> None:
        """Trials left `running` by a recorder on this host that is gone (killed) are failed."""
        running = connection.execute(select(trials.c.id, trials.c.recorded_by).where(
            trials.c.study_id == study_id, trials.c.status == "running")).all()
        orphans = [r.id for r in running if recorder_gone(r.recorded_by)]
        if orphans:
            connection.execute(update(trials).where(trials.c.id.in_(orphans), trials.c.status == "running")
                               .values(status="failed", failure_reason="error", finished_at=utcnow(),
                                       failure_message=STOPPED))


def _inspect(url: str) -> tuple[Owner, bool]:
    """Who owns the database on `url`, and whether it is vlmsearch's store at an older schema;
    looked at through a read-only connection, so another program's file is never changed."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        return Owner.EMPTY, False
    if path is not None:
        refuse_non_sqlite(path, url)
    probe = make_engine(url, create=False, read_only=True)
    try:
        with _Guard(url):
            found = refuse_foreign(probe, url)
            if found is not Owner.VLMSEARCH:
                return found, False
            with probe.connect() as connection:
                return found, migrate.current(connection) != migrate.head()
    finally:
        probe.dispose()


def upgrade_store(url: str, revision: str = "head") -> migrate.Upgrade:
    """Migrate the store on `url` to `revision` (what `vlmsearch db upgrade` runs)."""
    engine = make_engine(url)
    try:
        with _Guard(url):
            _inspect(url)
            return migrate.upgrade(engine, revision)
    finally:
        engine.dispose()


class _Guard:
    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if exc is None or not isinstance(exc, SQLAlchemyError):
            return
        detail = str(exc.orig) if isinstance(exc, DBAPIError) and exc.orig is not None else str(exc)
        detail = " ".join(line.strip() for line in detail.splitlines() if line.strip())
        raise StorageError(f"cannot use storage {redact_url(self.url)}: "
                           f"{redact_secrets(detail, self.url)}") from None
