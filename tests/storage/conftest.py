"""One fixture, `url`, runs every store test on SQLite and on a real PostgreSQL server.

PostgreSQL: the server in $VLMSEARCH_TEST_POSTGRES (a URL; CI starts one), else a throwaway one
this session starts with initdb/pg_ctl and stops at the end. The PostgreSQL half is skipped only
when there are no PostgreSQL binaries on the machine, and the skip says so.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.testing import LocalPostgres, NoPostgres, create_database, drop_database


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server whose user may create databases."""
    given = os.environ.get("VLMSEARCH_TEST_POSTGRES")
    if given:
        yield given
        return
    try:
        server = LocalPostgres()
    except NoPostgres as exc:
        pytest.skip(f"PostgreSQL half skipped: {exc}")
    with server:
        yield server.url


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
