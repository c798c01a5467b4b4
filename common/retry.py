"""Waiting out a database that is locked or briefly unreachable: the same call again, with
backoff, while the error is one that goes away by itself (a lock, a dropped connection)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
TRANSIENT_TYPES = ("OperationalError", "InterfaceError")  # SQLAlchemy's, and the drivers' own
TRANSIENT_WORDS = ("database is locked", "database is busy", "connection", "server closed",
                   "terminating", "could not connect", "timeout", "timed out", "shutting down",
                   "starting up")


def transient(exc: BaseException | None) -> bool:
    """A lock or a lost connection anywhere in the chain of causes (Optuna wraps SQLAlchemy's)."""
    seen = 0
    while exc is not None and seen < 10:
        text = str(exc).lower()
        if type(exc).__name__ in TRANSIENT_TYPES and any(word in text for word in TRANSIENT_WORDS):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class Backoff:
    """`call(fn)`: fn(), again after 0.5 s, 1 s, 2 s ... (at most `cap_s` apart) while it fails
    transiently, for up to `limit_s`; says once that it waits and once that it is back."""

    def __init__(self, what: str, say: Callable[[str], None], first_s: float = 0.5, cap_s: float = 15.0,
                 limit_s: float = 600.0) -> None:
        self.what, self.say = what, say
        self.first_s, self.cap_s, self.limit_s = first_s, cap_s, limit_s

    def call(self, fn: Callable[[], T]) -> T:
        """fn()'s value, once it succeeds; a lasting or non-transient error is raised."""
        delay, began = self.first_s, time.monotonic()
        while True:
            try:
                value = fn()
            except Exception as exc:
                if not transient(exc) or time.monotonic() - began > self.limit_s:
                    raise
                if delay == self.first_s:
                    self.say(f"{self.what} is locked or unreachable ({_first_line(exc)}); retrying "
                             f"with backoff for up to {self.limit_s:.0f} s")
                time.sleep(delay)
                delay = min(delay * 2, self.cap_s)
                continue
            if delay != self.first_s:
                self.say(f"{self.what} is back")
            return value


def _first_line(exc: BaseException) -> str:
    """The error's first line (its type when it has no text), short enough for one log line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
