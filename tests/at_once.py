"""Several processes doing one thing at the same instant (searches started together): `code`
runs under `python -c` from the project root with the start time as argv[1] and `args` after it,
and runs the line `START` once its imports are done, so that all go on at the same instant."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = "import sys, time; time.sleep(max(0.0, float(sys.argv[1]) - time.time()))"


def run_at_once(code: str, *args: str, processes: int = 3, delay_s: float = 8.0) -> list[str]:
    """The processes' stdouts; each must exit 0 (the assertion shows its stderr)."""
    start = str(time.time() + delay_s)  # after every process's imports
    started = [subprocess.Popen([sys.executable, "-c", code, start, *args], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(processes)]
    outs = []
    for process in started:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outs.append(out)
    return outs
