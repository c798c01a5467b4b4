"""One fixture, `url`, runs every store test on SQLite and on a real PostgreSQL server.

PostgreSQL: the session's server (`postgres_server` in tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def url(database: str) -> str:
    """A fresh, empty store on each backend (`database` in tests/conftest.py)."""
    return database


@pytest.fixture
def store(url: str) -> Iterator[object]:
    from storage import ResultsStore

    with ResultsStore(url) as opened:
        yield opened
