"""Infrastructure every package may use: URLs and password redaction, process checks, file locks,
retry with backoff, lazy package surfaces. Imports nothing from the project's other packages (the
ground of the graph)."""

from common.lazy import lazy_names
from common.locks import one_at_a_time
from common.processes import STOPPED, recorder_alive, recorder_gone, recorder_id
from common.retry import Backoff
from common.urls import (
    database_url,
    is_sqlite,
    redact_passwords,
    redact_secrets,
    redact_url,
    sqlite_path,
    unencoded_at,
)

__all__ = [
    "STOPPED",
    "Backoff",
    "database_url",
    "is_sqlite",
    "lazy_names",
    "one_at_a_time",
    "recorder_alive",
    "recorder_gone",
    "recorder_id",
    "redact_passwords",
    "redact_secrets",
    "redact_url",
    "sqlite_path",
    "unencoded_at",
]
