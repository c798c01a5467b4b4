"""A Ctrl-C the driver acts on at a safe point.

Python's own handler raises KeyboardInterrupt wherever the main thread is. Two ways that went
wrong here: raised inside a weakref callback it is printed ("Exception ignored in ...") and
dropped, so the search ran to its end (seen in CI); raised inside an Optuna storage call it skips
the session's rollback (Optuna rolls back on Exception, and KeyboardInterrupt is not one), so the
open SQLite transaction kept the database locked and marking the running trials waited on it for
the Backoff's 600 s (seen in a local run). `CtrlC` only notes the first Ctrl-C; the driver's loop
raises KeyboardInterrupt at its next turn (`check`, at most a second later), between storage
calls. A second Ctrl-C raises at once, wherever the driver is."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

NOTICE = b"\nCtrl-C: stopping at the driver's next step (Ctrl-C again: at once)\n"


class CtrlC:
    """Within `with CtrlC() as ctrl_c:` (main thread only; elsewhere it does nothing) the first
    SIGINT is noted, and `ctrl_c.check()` raises KeyboardInterrupt, as does leaving the block
    normally; a second SIGINT raises at once."""

    def __init__(self) -> None:
        self.pressed = False
        self._installed = False
        self._previous: Any = None

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
        if kind is None:
            self.check()  # pressed during the block's last turn: still interrupted

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        os.write(2, NOTICE)

    def check(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed."""
        if self.pressed:
            raise KeyboardInterrupt
