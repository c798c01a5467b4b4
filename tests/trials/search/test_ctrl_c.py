"""A Ctrl-C whose KeyboardInterrupt Python drops (it landed in a weakref callback) still stops the
driver: `CtrlC` latches it."""

from __future__ import annotations

import os
import signal
import weakref

import pytest

from trials.search.ctrl_c import CtrlC


class _Dropper:
    """A finaliser that receives the SIGINT: Python prints its KeyboardInterrupt and goes on."""


def _interrupt_inside_a_finaliser() -> None:
    target = _Dropper()
    weakref.finalize(target, os.kill, os.getpid(), signal.SIGINT)
    del target  # the handler runs inside the finaliser's call: its raise is "ignored"


def test_a_dropped_ctrl_c_is_raised_at_the_next_check() -> None:
    with pytest.raises(KeyboardInterrupt), CtrlC() as ctrl_c:
        _interrupt_inside_a_finaliser()
        assert ctrl_c.pressed, "the handler ran, and its raise was dropped"
        ctrl_c.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the handler is restored"


def test_leaving_the_block_after_a_dropped_ctrl_c_raises() -> None:
    with pytest.raises(KeyboardInterrupt), CtrlC():
        _interrupt_inside_a_finaliser()


def test_without_ctrl_c_nothing_is_raised() -> None:
    with CtrlC() as ctrl_c:
        ctrl_c.check()
    assert not ctrl_c.pressed
