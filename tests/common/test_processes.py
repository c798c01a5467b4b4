"""Recorders (`host:pid`): this process is alive, a finished child is gone, another host's unknown."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from common.processes import recorder_alive, recorder_gone, recorder_id


def test_this_process_is_alive_and_not_gone() -> None:
    me = recorder_id()
    assert me == f"{socket.gethostname()}:{os.getpid()}"
    assert recorder_alive(me) and not recorder_gone(me)


def test_a_finished_process_is_gone() -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    dead = f"{socket.gethostname()}:{child.stdout.strip()}"
    assert recorder_gone(dead) and not recorder_alive(dead)


def test_another_host_or_no_recorder_is_neither() -> None:
    for recorded_by in (f"elsewhere-{socket.gethostname()}:1", None, "", "no-pid"):
        assert not recorder_gone(recorded_by) and not recorder_alive(recorded_by)
