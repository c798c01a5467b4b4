"""Who records a trial (`host:pid`), and whether that process is known to be gone.

The results store and the MLflow tracker both mark a trial `running` with its recorder; a later
search on the same study fails (in the store) or terminates (in MLflow) the trials whose recorder
died on this host, and leaves alone those of a live search or of another host.
"""

from __future__ import annotations

import os
import socket


def recorder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def recorder_gone(recorded_by: str | None) -> bool:
    """True only when `recorded_by` names a process on this host that no longer exists."""
    if not recorded_by or ":" not in recorded_by:
        return False
    where, _, pid = recorded_by.rpartition(":")
    if where != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False
