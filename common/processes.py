"""Who records a trial (`host:pid`), and whether that process is known to be gone.

The results store and the MLflow tracker both mark a trial `running` with its recorder; a later
search on the same study fails (in the store) or terminates (in MLflow) the trials whose recorder
died on this host, and leaves alone those of a live search or of another host.
"""

from __future__ import annotations

import os
import socket

STOPPED = "the search recording it stopped before the trial finished (interrupted or killed)"


def recorder_id() -> str:
    """This process as a recorder: `host:pid` (what `recorder_gone` and `recorder_alive` read)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _local_pid(recorded_by: str | None) -> int | None:
    """The pid in `recorded_by` when it names a process of this host, else None."""
    if not recorded_by or ":" not in recorded_by:
        return None
    where, _, pid = recorded_by.rpartition(":")
    return int(pid) if where == socket.gethostname() and pid.isdigit() else None


def _exists(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def recorder_gone(recorded_by: str | None) -> bool:
    """True only when `recorded_by` names a process on this host that no longer exists."""
    pid = _local_pid(recorded_by)
    return pid is not None and pid != os.getpid() and not _exists(pid)


def recorder_alive(recorded_by: str | None) -> bool:
    """True only when `recorded_by` names a process on this host that exists (this one too)."""
    pid = _local_pid(recorded_by)
    return pid is not None and (pid == os.getpid() or _exists(pid))
