"""The MLflow sink of a search: live logging that never stops the search.

Every event goes through `StudyTracker`, whose writes are idempotent. When MLflow fails (a server
down, a locked database), the sink says so once, keeps what it could not log in memory (trials
started and finished, intermediate steps, the latest front), and backs off (5 s, doubling to
60 s). The next event after the back-off replays everything pending first. When the search ends
with something still unlogged, the sink names the command that logs it from the results store:
`vlmsearch sync --study NAME`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from common import redact_secrets, redact_url
from dashboard.client import DEFAULT_TRACKING, open_client
from dashboard.tracker import StudyTracker
from search_space import Ending, Front, StudyInfo, TrialConfig, TrialResult

log = logging.getLogger(__name__)

FIRST_BACKOFF_S, MAX_BACKOFF_S = 5.0, 60.0


class MlflowSink:
    def __init__(self, uri: str, say: Callable[[str], None] = log.warning, client: Any = None,
                 storage: str | None = None) -> None:
        """`storage`: the results store's URL when it is not the default (named in the sync hint)."""
        self.uri, self.say, self.storage = uri, say, storage
        self._client = client
        self.tracker: StudyTracker | None = None
        self.study: Any = None  # StudyInfo
        self.opened = False
        self.started: dict[int, Any] = {}  # number -> TrialConfig, not yet finished
        self.steps: dict[int, list[tuple[int, dict[str, float]]]] = {}
        self.results: dict[int, TrialResult] = {}
        self.unlogged_starts: set[int] = set()
        self.unlogged_finishes: set[int] = set()
        self.front: Any = None
        self.front_unlogged = False
        self.retry_at = 0.0
        self.backoff = FIRST_BACKOFF_S
        self.failures = 0

    @property
    def pending(self) -> int:
        """How many trials MLflow still lacks (started or finished, not logged)."""
        return len(self.unlogged_starts | self.unlogged_finishes)

    @property
    def complete(self) -> bool:
        return self.opened and not self.pending and not self.front_unlogged

    # ---- sink events -----------------------------------------------------------------------

    def study_started(self, study: StudyInfo) -> None:
        self.study = study
        self._attempt()

    def trial_started(self, study: str, number: int, point: TrialConfig) -> None:
        self.started[number] = point
        self.unlogged_starts.add(number)
        self._attempt()

    def trial_intermediate(self, study: str, number: int, step: int, metrics: dict[str, float]) -> None:
        self.steps.setdefault(number, []).append((step, dict(metrics)))
        if self._online() and number not in self.unlogged_starts:
            self._guarded(lambda: self.tracker.log_step(number, step, metrics))  # type: ignore[union-attr]

    def trial_finished(self, study: str, result: TrialResult) -> None:
        number = int(result.number or 0)
        self.results[number] = result
        self.started.pop(number, None)
        self.unlogged_starts.discard(number)
        self.unlogged_finishes.add(number)
        self._attempt()

    def front_updated(self, study: str, front: Front) -> None:
        self.front, self.front_unlogged = front, True
        self._attempt()

    def study_finished(self, study: str, status: Ending = "finished") -> None:
        """Not a sink event: the search ended. One last try (back-off or not), then the parent run
        ends; what is still unlogged is named with the command that logs it."""
        self.retry_at = 0.0
        self._attempt()
        if self.complete:
            self._guarded(lambda: self.tracker.close(status))  # type: ignore[union-attr]
        if not self.complete:
            self.say(f"tracking: {self.pending} trial(s) of study '{study}' (and the front) are not "
                     f"in MLflow at {redact_url(self.uri)}; the results store has them: when MLflow is "
                     f"back, `{self.sync_command(study)}` logs them")

    def sync_command(self, study: str) -> str:
        """The command that logs what is missing, with the stores this search used (no password)."""
        flags = "" if self.uri == DEFAULT_TRACKING else f" --tracking {redact_url(self.uri)}"
        flags += f" --storage {redact_url(self.storage)}" if self.storage else ""
        return f"vlmsearch sync --study {study}{flags}"

    # ---- replay ----------------------------------------------------------------------------

    def _online(self) -> bool:
        return self.opened and time.monotonic() >= self.retry_at

    def _attempt(self) -> None:
        """Log everything pending, oldest first, unless backing off after a failure."""
        if self.study is None or time.monotonic() < self.retry_at:
            return
        self._guarded(self._replay)

    def _replay(self) -> None:
        if not self.opened:
            self._open()
        for number in sorted(self.unlogged_starts):
            self.tracker.start_trial(number, self.started[number], running=True)  # type: ignore[union-attr]
            for step, metrics in self.steps.get(number, []):
                self.tracker.log_step(number, step, metrics)  # type: ignore[union-attr]
            self.unlogged_starts.discard(number)
        for number in sorted(self.unlogged_finishes):
            result = self.results[number]
            merged = {**dict(self.steps.pop(number, [])), **dict(result.history)}
            self.tracker.finish_trial(replace(result, history=sorted(merged.items())))  # type: ignore[union-attr]
            self.unlogged_finishes.discard(number)
        if self.front_unlogged and self.front is not None:
            front = self.front
            self.tracker.update_front(front.ranks, front.hypervolume, front.finished)  # type: ignore[union-attr]
            self.front_unlogged = False

    def _open(self) -> None:
        if self._client is None:
            self._client = open_client(self.uri)
        tracker = StudyTracker.on(self._client, self.uri, self.study.name)
        report = tracker.open(self.study.space, self.study.space_yaml, self.study.settings)
        if report.orphans_terminated:
            self.say(f"tracking: {report.orphans_terminated} run(s) left running by a search that "
                     "stopped were marked failed in MLflow")
        self.tracker, self.opened = tracker, True

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:  # MLflow must never stop the search
            self._went_offline(exc)
        else:
            if self.failures:
                self.say(f"tracking: MLflow at {redact_url(self.uri)} answers again; everything "
                         "waiting was logged")
            self.failures, self.backoff = 0, FIRST_BACKOFF_S

    def _went_offline(self, exc: Exception) -> None:
        self.failures += 1
        self.retry_at = time.monotonic() + self.backoff
        if self.failures == 1:
            reason = redact_secrets(f"{type(exc).__name__}: {exc}", self.uri).splitlines()[0][:300]
            self.say(f"tracking: MLflow at {redact_url(self.uri)} failed ({reason}); the search goes on "
                     f"and retries in {self.backoff:.0f} s")
        log.debug("MLflow failure %d", self.failures, exc_info=True)
        self.backoff = min(MAX_BACKOFF_S, self.backoff * 2)
