"""One fixture, `url`, runs every store test on SQLite and on a real PostgreSQL server.

PostgreSQL: the session's server (`postgres_server` in tests/conftest.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.testing import create_database, drop_database


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/results.db"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"vs_test_{uuid.uuid4().hex[:12]}"
    fresh = create_database(server, name)
    yield fresh
    drop_database(server, name)


@pytest.fixture
def store(url: str) -> Iterator[object]:
    from storage import ResultsStore

    with ResultsStore(url) as opened:
        yield opened
