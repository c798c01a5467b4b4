"""Where a search reports: a small protocol, so `trials` never imports storage or dashboard.

The driver calls every sink from one process, in order: study_started, then per trial
trial_started / trial_intermediate* / trial_finished, and front_updated after each finished
trial. Sinks must be idempotent on (study, number): a resumed search may report a trial again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from search_space.point import TrialConfig
from search_space.result import TrialResult
from search_space.space import SearchSpace

log = logging.getLogger(__name__)


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
    def study_started(self, study: StudyInfo) -> None: ...
    def trial_started(self, study: str, number: int, point: TrialConfig) -> None: ...
    def trial_intermediate(self, study: str, number: int, step: int, metrics: dict[str, float]) -> None: ...
    def trial_finished(self, study: str, result: TrialResult) -> None: ...
    def front_updated(self, study: str, front: Front) -> None: ...


class Sinks:
    """Fan-out to several sinks; a sink that raises is logged and the search goes on."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = list(sinks)

    def __getattr__(self, event: str) -> Any:
        def call(*args: Any) -> None:
            for sink in self.sinks:
                try:
                    getattr(sink, event)(*args)
                except Exception:  # a sink's failure must not stop the search
                    log.exception("sink %s failed on %s", type(sink).__name__, event)

        return call


class MemorySink:
    """Keeps every event (tests, and the driver's own summary)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.results: dict[int, TrialResult] = {}
        self.front: Front | None = None

    def study_started(self, study: StudyInfo) -> None:
        self.events.append(("study_started", (study.name,)))

    def trial_started(self, study: str, number: int, point: TrialConfig) -> None:
        self.events.append(("trial_started", (number, point.config_hash)))

    def trial_intermediate(self, study: str, number: int, step: int, metrics: dict[str, float]) -> None:
        self.events.append(("trial_intermediate", (number, step)))

    def trial_finished(self, study: str, result: TrialResult) -> None:
        self.events.append(("trial_finished", (result.number, result.status)))
        self.results[result.number or 0] = result

    def front_updated(self, study: str, front: Front) -> None:
        self.front = front


class JsonLinesSink:
    """Appends one JSON object per event to a file (a plain, greppable record of a search)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.written: set[tuple[str, int]] = set()  # read at study_started: a resumed search replays

    def _finished_numbers(self) -> set[tuple[str, int]]:
        if not self.path.exists():
            return set()
        done = set()
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            if record.get("event") == "trial_finished":
                done.add((record["study"], record["number"]))
        return done

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def study_started(self, study: StudyInfo) -> None:
        self.written |= self._finished_numbers()  # this or another search's, up to now: write each once
        self._write({"event": "study_started", "study": study.name, "settings": study.settings})

    def trial_started(self, study: str, number: int, point: TrialConfig) -> None:
        self._write({"event": "trial_started", "study": study, "number": number,
                     "config_hash": point.config_hash})

    def trial_intermediate(self, study: str, number: int, step: int, metrics: dict[str, float]) -> None:
        self._write({"event": "trial_intermediate", "study": study, "number": number, "step": step,
                     "metrics": metrics})

    def trial_finished(self, study: str, result: TrialResult) -> None:
        if (study, result.number) in self.written:
            return
        self.written.add((study, result.number or 0))
        self._write({"event": "trial_finished", **result.to_json()})

    def front_updated(self, study: str, front: Front) -> None:
        self._write({"event": "front_updated", "study": study, "pareto": front.pareto,
                     "hypervolume": front.hypervolume, "finished": front.finished})
