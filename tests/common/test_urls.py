"""One parser for database URLs: redaction of every password (an unencoded '@' inside it,
query-string passwords, the password alone in a driver's message) and SQLite's file."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.urls import (
    database_url,
    is_sqlite,
    redact_passwords,
    redact_secrets,
    redact_url,
    sqlite_path,
    unencoded_at,
    url_password,
)

CASES = [
    ("postgresql+psycopg://bob:s3cret@db:5432/x", "postgresql+psycopg://bob:***@db:5432/x", "s3cret"),
    ("postgresql://bob:p@ss@db/x", "postgresql://bob:***@db/x", "p@ss"),
    ("postgresql://bob:p/w:x@db/x?sslmode=require", "postgresql://bob:***@db/x?sslmode=require", "p/w:x"),
    ("postgresql://bob@db/x?password=s3cret&sslmode=require",
     "postgresql://bob@db/x?password=***&sslmode=require", None),
    ("postgresql://db/x?sslmode=require&sslpassword=k3y", "postgresql://db/x?sslmode=require&sslpassword=***",
     None),
    ("sqlite:///runs/a@b.db", "sqlite:///runs/a@b.db", None),
    ("postgresql://bob:p%40ss@db/x", "postgresql://bob:***@db/x", "p%40ss"),
    ("http://admin:pw@mlflow:5000", "http://admin:***@mlflow:5000", "pw"),
    ("http://mlflow:5000", "http://mlflow:5000", None),
]


@pytest.mark.parametrize(("url", "shown", "password"), CASES)
def test_the_password_is_redacted_whole(url: str, shown: str, password: str | None) -> None:
    assert redact_url(url) == shown and url_password(url) == password
    assert redact_passwords(f"storage: {url}\nnext: line") == f"storage: {shown}\nnext: line"


def test_an_unencoded_at_is_found() -> None:
    assert unencoded_at("postgresql+psycopg://bob:p@ss@db/x")
    assert not unencoded_at("postgresql://bob:p%40ss@db/x") and not unencoded_at("sqlite:///a@b.db")


def test_messages_never_carry_the_password() -> None:
    url = "postgresql://bob@db/x?password=s3cret"
    assert "s3cret" not in redact_secrets(f"connection to {url} failed (password s3cret)", url)
    assert "p@ss" not in redact_secrets("auth failed for p%40ss / p@ss", "postgresql://bob:p%40ss@db/x")
    assert redact_secrets("no password here", "sqlite:///runs/a.db") == "no password here"


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:///runs/results.db", Path("runs/results.db")),
    ("sqlite:////tmp/abs.db", Path("/tmp/abs.db")),
    ("sqlite+pysqlite:///runs/x.db", Path("runs/x.db")),
    ("sqlite:///~/x.db", Path("~/x.db").expanduser()),
])
def test_the_file_of_a_sqlite_url(url: str, path: Path) -> None:
    assert is_sqlite(url) and sqlite_path(url) == path


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_database_has_no_file(url: str) -> None:
    assert is_sqlite(url) and sqlite_path(url) is None


@pytest.mark.parametrize("url", ["postgresql+psycopg://bob:pw@db/x", "http://mlflow:5000", "databricks", ""])
def test_other_urls_are_not_sqlite(url: str) -> None:
    assert not is_sqlite(url) and sqlite_path(url) is None


def test_what_is_no_database_url_parses_to_none() -> None:
    assert database_url("databricks") is None
    parsed = database_url("postgresql://bob:pw@db:5432/x")
    assert parsed is not None and parsed.get_backend_name() == "postgresql" and parsed.database == "x"
