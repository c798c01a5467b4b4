"""One parser redacts every URL's password: unencoded '@' inside it, query-string passwords."""

from __future__ import annotations

import pytest

from search_space.urls import redact_passwords, redact_url, unencoded_at, url_password
from storage.engine import StorageError, parse_url, safe_url, scrub

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
]


@pytest.mark.parametrize(("url", "shown", "password"), CASES)
def test_the_password_is_redacted_whole(url: str, shown: str, password: str | None) -> None:
    assert redact_url(url) == shown and url_password(url) == password
    assert redact_passwords(f"storage: {url}\nnext: line") == f"storage: {shown}\nnext: line"


def test_an_unencoded_at_is_refused_without_showing_the_password() -> None:
    url = "postgresql+psycopg://bob:p@ss@db/x"
    assert unencoded_at(url) and not unencoded_at("postgresql://bob:p%40ss@db/x")
    with pytest.raises(StorageError, match="%40") as caught:
        parse_url(url)
    assert "p@ss" not in str(caught.value) and "ss@" not in str(caught.value)


def test_store_messages_never_carry_the_password() -> None:
    url = "postgresql://bob@db/x?password=s3cret"
    assert "s3cret" not in safe_url(url)
    assert "s3cret" not in scrub(f"connection to {url} failed (password s3cret)", url)
    assert "p@ss" not in scrub("auth failed for p%40ss / p@ss", "postgresql://bob:p%40ss@db/x")
