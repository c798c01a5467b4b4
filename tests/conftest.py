"""Shared test setup: nothing is downloaded, examples are found from any working dir, and one
PostgreSQL server serves the session: the one in $VLMSEARCH_TEST_POSTGRES (a URL; CI starts one),
else a throwaway one started with initdb/pg_ctl and stopped at the end. PostgreSQL tests are
skipped only when there are no PostgreSQL binaries on the machine, and the skip says so."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.testing import LocalPostgres, NoPostgres, create_database, drop_database

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF datasets' cache (the Arrow tables of LLaVA files) in a temporary folder, also for the
    commands a test starts."""
    folder = tmp_path_factory.mktemp("hf-datasets-cache")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(folder))
    return folder


@pytest.fixture
def examples_dir() -> Path:
    return EXAMPLES


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
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database on each backend: a new SQLite file, or a new database on
    the session's server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/results.db"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"vs_test_{uuid.uuid4().hex[:12]}"
    yield create_database(server, name)
    drop_database(server, name)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the extended tier (tests/extended.py) before `-m` selects and put the longest tests
    first (tests/extended.py's RUN_FIRST: with two workers, none is left running one alone at the
    end); a listed prefix that no collected test starts with is an error when the whole suite is
    collected."""
    from tests.extended import first_rank, is_extended, unmatched

    for item in items:
        if is_extended(item.nodeid):
            item.add_marker(pytest.mark.extended)
    items.sort(key=lambda item: first_rank(item.nodeid))  # stable: the rest keep their order
    whole = not config.args or config.args == [str(ROOT / "tests")] or config.args == ["tests"]
    missing = unmatched([item.nodeid for item in items]) if whole else []
    if missing:
        raise pytest.UsageError(f"tests/extended.py lists tests that do not exist: {missing}")
