"""One process at a time on a file: a second holder waits until the first lets go."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from common.locks import one_at_a_time

WAITER = """import sys, time
from pathlib import Path
from common.locks import one_at_a_time
with one_at_a_time(Path(sys.argv[1])):
    print(time.time())
"""


def test_a_second_process_waits_for_the_lock(tmp_path: Path) -> None:
    db = tmp_path / "new" / "x.db"
    with one_at_a_time(db):  # makes the folder
        waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(db)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        assert waiter.poll() is None  # still waiting
        released = time.time()
    out, _ = waiter.communicate(timeout=30)
    assert waiter.returncode == 0 and float(out) >= released
    assert (tmp_path / "new" / "x.db.lock").exists()


def test_no_path_takes_no_lock() -> None:
    with one_at_a_time(None):
        pass
