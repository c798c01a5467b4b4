"""The store's URLs: refused with a reason that never shows the password."""

from __future__ import annotations

import pytest

from storage.engine import StorageError, parse_url


def test_an_unencoded_at_is_refused_without_showing_the_password() -> None:
    with pytest.raises(StorageError, match="%40") as caught:
        parse_url("postgresql+psycopg://bob:p@ss@db/x")
    assert "p@ss" not in str(caught.value) and "ss@" not in str(caught.value)


@pytest.mark.parametrize(("url", "reason"), [("databricks", "not a database URL"),
                                             ("sqlite:///", "names no database file"),
                                             ("sqlite:///:memory:", "names no database file")])
def test_what_keeps_nothing_is_refused(url: str, reason: str) -> None:
    with pytest.raises(StorageError, match=reason):
        parse_url(url)


def test_a_refused_url_never_shows_its_password() -> None:
    with pytest.raises(StorageError) as caught:
        parse_url("postgresql://bob:s3cret@db:notaport/x")  # SQLAlchemy cannot parse it: redacted anyway
    assert "s3cret" not in str(caught.value)
