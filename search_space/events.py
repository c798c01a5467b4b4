"""The events of a search and their payloads, typed here so every sink (the store, MLflow, the
live view, a JSON-lines file) shares them and `trials` never imports storage or dashboard.

The driver calls every sink from one process, in order: study_started, then per trial
trial_started / trial_intermediate* / trial_finished, front_updated after each finished trial,
and study_finished once at the end. Sinks must be idempotent on (study, number): a resumed
search may report a trial again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from search_space.point import TrialConfig
from search_space.result import TrialResult
from search_space.space import SearchSpace

log = logging.getLogger(__name__)
Ending = Literal["finished", "interrupted"]


@dataclass(frozen=True)
class StudyInfo:
    name: str
    space: SearchSpace
    space_yaml: str
    settings: dict[str, Any] = field(default_factory=dict)  # backend, sampler, trials, ...


@dataclass(frozen=True)
class Front:
    """The study's current Pareto front: rank per trial number, and its hypervolume."""

    ranks: dict[int, int | None]
    hypervolume: float
    finished: int

    @property
    def pareto(self) -> list[int]:
        return sorted(n for n, r in self.ranks.items() if r == 0)


class Sink(Protocol):
    """What a sink may implement; Sinks calls only the events a sink has."""

    def study_started(self, study: StudyInfo) -> None: ...
    def trial_started(self, study: str, number: int, point: TrialConfig) -> None: ...
    def trial_intermediate(self, study: str, number: int, step: int, metrics: dict[str, float]) -> None: ...
    def trial_finished(self, study: str, result: TrialResult) -> None: ...
    def front_updated(self, study: str, front: Front) -> None: ...
    def study_finished(self, study: str, status: Ending) -> None: ...


class Sinks:
    """Fan-out to several sinks, in order; a sink that raises is logged and the search goes on,
    and a sink without an event's method is skipped for it."""

    def __init__(self, sinks: Iterable[object]) -> None:
        self.sinks = list(sinks)

    def _each(self, event: str, call: Callable[[Any], None]) -> None:
        for sink in self.sinks:
            method = getattr(sink, event, None)
            if method is None:
                continue
            try:
                call(method)
            except Exception:  # a sink's failure must not stop the search
                log.exception("sink %s failed on %s", type(sink).__name__, event)

    def study_started(self, study: StudyInfo) -> None:
        self._each("study_started", lambda m: m(study))

    def trial_started(self, study: str, number: int, point: TrialConfig) -> None:
        self._each("trial_started", lambda m: m(study, number, point))

    def trial_intermediate(self, study: str, number: int, step: int, metrics: dict[str, float]) -> None:
        self._each("trial_intermediate", lambda m: m(study, number, step, metrics))

    def trial_finished(self, study: str, result: TrialResult) -> None:
        self._each("trial_finished", lambda m: m(study, result))

    def front_updated(self, study: str, front: Front) -> None:
        self._each("front_updated", lambda m: m(study, front))

    def study_finished(self, study: str, status: Ending) -> None:
        self._each("study_finished", lambda m: m(study, status))
