"""Backoff: a transient database error is waited out, any other is raised at once."""

from __future__ import annotations

import pytest

from common.retry import Backoff, transient


class OperationalError(Exception):
    """Named like SQLAlchemy's and the drivers' (`transient` reads the type's name)."""


def test_a_lock_is_transient_anywhere_in_the_chain() -> None:
    locked = OperationalError("database is locked")
    wrapped = RuntimeError("storage failed")
    wrapped.__cause__ = locked
    assert transient(locked) and transient(wrapped)
    assert not transient(OperationalError("no such table"))
    assert not transient(ValueError("database is locked"))  # (not a database error's type)


def test_backoff_retries_until_it_works_and_says_so_once() -> None:
    said: list[str] = []
    calls = iter([OperationalError("database is locked"), OperationalError("database is locked"), 7])

    def fn() -> int:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert Backoff("the store", said.append, first_s=0.001).call(fn) == 7
    assert len(said) == 2 and "locked or unreachable" in said[0] and said[1] == "the store is back"


def test_backoff_raises_what_is_not_transient() -> None:
    def fn() -> None:
        raise OperationalError("no such table: trials")

    with pytest.raises(OperationalError, match="no such table"):
        Backoff("the store", print, first_s=0.001).call(fn)
