"""A Ctrl-C the driver cannot miss.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT lands; one that lands in a
weakref callback or a `__del__` is printed ("Exception ignored in ...") and dropped, and the search
went on to the end (seen in CI). `CtrlC` raises as Python does and also latches the signal, so the
driver's loop raises it again at its next turn (`check`)."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class CtrlC:
    """Within `with CtrlC() as ctrl_c:` (main thread only; elsewhere it does nothing), SIGINT raises
    KeyboardInterrupt, `ctrl_c.check()` raises it again, and so does leaving the block normally."""

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
            self.check()  # pressed in the block's last turn, its raise dropped: still interrupted

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.pressed = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed (even where its first raise was dropped)."""
        if self.pressed:
            raise KeyboardInterrupt
