"""The Optuna backend's study database: the RDB storage (created once under a race), and which
running trials belong to a dead search (no heartbeat, or its process gone on this host)."""

from __future__ import annotations

import datetime
import logging
import threading
import time
import warnings
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event

from common import is_sqlite, recorder_gone

log = logging.getLogger(__name__)
HEARTBEAT_S, GRACE_S = 5, 20
RECORDER = "vlmsearch:recorded_by"  # host:pid of the search running a trial (a system attr)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def rdb_storage(url: str, tries: int = 5) -> RDBStorage:
    """Optuna's storage on `url`. Two searches creating the same new server database at once
    race to create its tables (SQLite files take turns instead: `one_at_a_time`); the loser finds
    them made by the winner on its next try."""
    for attempt in range(tries):
        try:
            return _write_ahead(RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                           engine_kwargs=_engine_kwargs(url)), url)
        except Exception as exc:
            if not _creation_race(exc) or attempt == tries - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _write_ahead(storage: RDBStorage, url: str) -> RDBStorage:
    """A SQLite study in WAL mode with synchronous=NORMAL, as the results store keeps the same
    file: a commit (a dozen a trial) no longer waits for an fsync. A killed search still loses
    nothing; only an OS crash or power loss can lose the last commits."""
    if is_sqlite(url):
        event.listen(storage.engine, "connect", _pragmas)
        storage.engine.dispose()  # the connections opened before the listener
    return storage


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _creation_race(exc: BaseException) -> bool:
    """A table or revision row another process created first (PostgreSQL's "duplicate key" on
    its catalog, SQLite's "already exists" and UNIQUE failures)."""
    text = str(exc).lower()
    return type(exc).__name__ == "IntegrityError" or any(
        word in text for word in ("already exists", "duplicate key", "unique constraint"))


def dead_running(study: optuna.Study) -> list[FrozenTrial]:
    """Running trials whose search is dead: known gone on this host, or stale (no heartbeat for
    the grace period, or none at all since a start older than that)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=GRACE_S)
    stale = set(_stale_ids(study)) | set(_without_heartbeat(study, cutoff))
    return [t for t in running if t._trial_id in stale or recorder_gone(t.system_attrs.get(RECORDER))]


def _stale_ids(study: optuna.Study) -> list[int]:
    """Optuna's own stale check (heartbeat older than the grace period)."""
    try:
        return list(study._storage._get_stale_trial_ids(study._study_id))  # type: ignore[attr-defined]
    except Exception:  # a private method we do not control
        log.debug("cannot ask Optuna for stale trials", exc_info=True)
        return []


def _without_heartbeat(study: optuna.Study, started_before: datetime.datetime) -> list[int]:
    """Ids of running trials that never recorded a heartbeat (Optuna's own stale check skips
    them) and started before `started_before`. Reads Optuna's RDB tables; if their layout
    changes, finds none."""
    try:
        from optuna.storages._rdb import models

        storage = getattr(study._storage, "_backend", study._storage)  # under Optuna's cache
        with storage.scoped_session() as session:
            rows = (session.query(models.TrialModel)
                    .filter(models.TrialModel.study_id == study._study_id,
                            models.TrialModel.state == TrialState.RUNNING)
                    .all())
            return [row.trial_id for row in rows if not row.heartbeats
                    and row.datetime_start is not None and row.datetime_start < started_before]
    except Exception:  # a private layout we do not control
        log.debug("cannot look for trials without heartbeats", exc_info=True)
        return []


class Heartbeat:
    """Records a heartbeat for every running trial, so a killed driver's trials go stale."""

    def __init__(self, study: optuna.Study) -> None:
        self.storage = study._storage
        self.ids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def set(self, running: Any) -> None:
        self.ids = [r.trial._trial_id for r in running]
        self._beat_once()

    def _beat_once(self) -> None:
        for trial_id in list(self.ids):
            try:
                self.storage.record_heartbeat(trial_id)
            except Exception:  # a finished trial or a busy database: the next beat retries
                log.debug("heartbeat for trial %s failed", trial_id, exc_info=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._beat_once()

    def stop(self) -> None:
        self._stop.set()



def _engine_kwargs(url: str) -> dict[str, Any]:
    if is_sqlite(url):
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


