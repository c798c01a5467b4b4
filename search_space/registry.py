"""Registries keyed by the YAML name: one per component kind, filled by a decorator."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, known: list[str] | tuple[str, ...]) -> str:
    """`"; did you mean 'x'?"` for the closest known name, or `""` when none is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def unknown_name_message(kind: str, name: object, known: list[str] | tuple[str, ...]) -> str:
    """`unknown fusion 'cross_atn'; did you mean 'cross_attention'?` (or the list of names)."""
    hint = did_you_mean(str(name), known)
    if not hint:
        hint = f"; known: {', '.join(sorted(known))}"
    return f"unknown {kind} '{name}'{hint}"


class Registry(Generic[T]):
    """Name -> entry, with a one-line description per entry.

    A duplicate name raises; an unknown name raises `KeyError` with a "did you mean".
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}
        self._broken: dict[str, str] = {}  # name -> why its plugin could not be registered

    def register(self, name: str, entry: T, description: str = "") -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        self._descriptions[name] = description
        return entry

    def decorator(self, name: str, description: str = "") -> Callable[[T], T]:
        """`@registry.decorator("name", "what it is")` registers the decorated object."""

        def wrap(entry: T) -> T:
            return self.register(name, entry, description)

        return wrap

    def broken(self, name: str, why: str) -> None:
        """Remember that the plugin providing `name` could not be registered, and why."""
        self._broken[name] = why

    def unknown(self, name: str) -> str:
        """Why `name` is not here: its plugin failed to load, or a "did you mean"."""
        if name in self._broken:
            return f"{self.kind} '{name}' is unavailable: {self._broken[name]}"
        return unknown_name_message(self.kind, name, self.names())

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise KeyError(self.unknown(name))
        return self._entries[name]

    def description(self, name: str) -> str:
        self.get(name)
        return self._descriptions[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
