"""Custom components come in through Python entry points that a user installs, never through a
YAML (a YAML holds names only, so loading one imports and runs nothing).

Group `vlmsearch.evaluators`: each entry point's name is the YAML name (`evaluator: NAME`) and
its object is a `search_space.components.Evaluator` with `trains_vlm=False`, the `parameters`
it reads and an `evaluate(point, options) -> TrialResult`. A plugin that fails to load is not
registered; asking for it names the entry point and the error.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from search_space.registry import Registry

EVALUATOR_GROUP = "vlmsearch.evaluators"


Problem = Callable[[Any], "str | None"]
_SEEN: set[tuple[str, str, str]] = set()  # (group, name, value): each entry point is loaded once


def _loaded(point: EntryPoint, kind: type, problem: Problem) -> Any:
    entry = point.load()
    if not isinstance(entry, kind):
        raise TypeError(f"it is a {type(entry).__name__}, not a {kind.__name__}")
    why = problem(entry)
    if why:
        raise TypeError(why)
    return entry


def register_plugins(registry: Registry[Any], group: str, kind: type, problem: Problem) -> None:
    """Register every installed entry point of `group` (an object of `kind` that `problem`
    finds nothing wrong with) in `registry`. Again later: those installed since."""
    for point in entry_points(group=group):
        if (group, point.name, point.value) in _SEEN:
            continue
        _SEEN.add((group, point.name, point.value))
        where = f"entry point '{point.name} = {point.value}' (group {group})"
        if point.name in registry:
            registry.broken(point.name, f"{where} reuses a built-in name; rename it")
            continue
        try:
            entry = _loaded(point, kind, problem)
        except Exception as exc:  # a broken plugin must not break every command
            registry.broken(point.name, f"{where} failed to load: {type(exc).__name__}: {exc}")
            continue
        registry.register(point.name, entry, getattr(entry, "description", "") or where)
