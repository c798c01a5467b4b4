"""Two sinks of the search's events (search_space.events): in memory, and a JSON-lines file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from search_space import Ending, Front, StudyInfo, TrialConfig, TrialResult


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

    def study_finished(self, study: str, status: Ending) -> None:
        self.events.append(("study_finished", (status,)))


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

    def study_finished(self, study: str, status: Ending) -> None:
        self._write({"event": "study_finished", "study": study, "status": status})
