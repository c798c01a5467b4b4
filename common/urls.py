"""Database URLs, by one parser each: which file a SQLite URL names, and the passwords taken out of
a URL (or a message that quotes one) before it is printed, logged, stored or sent to MLflow.

A URL's password is everything between the user's first ':' and the *last* '@' of its authority
(so an unencoded '@' inside it is redacted whole, where SQLAlchemy's parser would take the part
after it for the host), plus the value of any query parameter whose name holds "password"
(`?password=`, `sslpassword=`). SQLAlchemy is imported only where a database URL is parsed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

REDACTED = "***"
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&][^=&#]*password[^=&#]*=)(?P<value>[^&#]*)", re.IGNORECASE)
_NO_FILE = (None, "", ":memory:")  # SQLite databases that live in memory only


def database_url(url: str) -> URL | None:
    """`url` parsed by SQLAlchemy (any dialect and driver); None for what is no database URL at
    all (an MLflow `databricks`), so callers decide whether that is an error."""
    from sqlalchemy.engine import make_url  # (only where a URL is opened: not at start-up)
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None


def is_sqlite(url: str) -> bool:
    """Whether `url` is a SQLite database URL (any driver; a file or in memory)."""
    parsed = database_url(url)
    return parsed is not None and parsed.get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (`sqlite:///path`, any SQLite driver, `~` expanded); None for other
    URLs, for in-memory databases (`sqlite://`, `sqlite:///`, `:memory:`) and for non-URLs."""
    parsed = database_url(url)
    if parsed is None or parsed.get_backend_name() != "sqlite" or parsed.database in _NO_FILE:
        return None
    return Path(parsed.database).expanduser()


def _split(url: str) -> tuple[str, str, str] | None:
    """(scheme://, userinfo, the rest from the host on) of a URL with userinfo, else None."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    head = rest.split("?", 1)[0]
    at = head.rfind("@")
    if at < 0 or "/" in head[:at].split(":", 1)[0]:  # no userinfo (or an '@' inside a path)
        return None
    return scheme + sep, rest[:at], rest[at + 1:]


def url_password(url: str) -> str | None:
    """The password of the URL's userinfo, as written (None when it has none)."""
    parts = _split(url)
    if parts is None or ":" not in parts[1]:
        return None
    return parts[1].split(":", 1)[1] or None


def secrets(url: str) -> list[str]:
    """Every password the URL holds (its userinfo's, and query values), as written and decoded."""
    from urllib.parse import unquote

    found = [url_password(url)] + [m["value"] for m in _QUERY_PASSWORD.finditer(url)]
    return sorted({form for value in found if value for form in (value, unquote(value))}, key=len,
                  reverse=True)


def unencoded_at(url: str) -> bool:
    """Whether the URL's userinfo holds an '@' (which must be written %40)."""
    parts = _split(url)
    return parts is not None and "@" in parts[1]


def redact_url(url: str) -> str:
    """The URL with its password and password query values replaced by `***`."""
    parts = _split(url)
    if parts is not None and ":" in parts[1]:
        scheme, userinfo, rest = parts
        url = f"{scheme}{userinfo.split(':', 1)[0]}:{REDACTED}@{rest}"
    return _QUERY_PASSWORD.sub(lambda m: f"{m['key']}{REDACTED}", url)


def redact_passwords(text: str) -> str:
    """`text` (a YAML file, a message) with every URL in it redacted (see `redact_url`)."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def redact_secrets(text: str, url: str) -> str:
    """`text` (a driver's error message, say) with `url` redacted and every password it holds
    masked wherever it appears alone, as written or decoded (drivers quote it without the URL)."""
    text = text.replace(url, redact_url(url))
    for secret in secrets(url):
        text = text.replace(secret, REDACTED)
    return text
