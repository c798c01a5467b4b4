"""The driver's Ctrl-C (trials/search/ctrl_c.py): the first is noted and raised at the loop's
next check (never inside a storage call or a finaliser, where Python's own raise was dropped or
left SQLite locked), a second at once; the previous handler comes back."""

from __future__ import annotations

import os
import signal
import weakref

import pytest

from trials.search.ctrl_c import CtrlC


def _press() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_the_first_ctrl_c_waits_for_the_next_check() -> None:
    before = signal.getsignal(signal.SIGINT)  # (another test in this process may have set one)
    reached = False
    with pytest.raises(KeyboardInterrupt), CtrlC() as ctrl_c:
        _press()
        reached = True  # nothing raised where the signal landed
        ctrl_c.check()
    assert reached and ctrl_c.pressed
    assert signal.getsignal(signal.SIGINT) is before, "the handler is restored"


def test_a_ctrl_c_inside_a_finaliser_is_not_lost() -> None:
    class Target:
        pass

    target = Target()
    weakref.finalize(target, _press)
    with pytest.raises(KeyboardInterrupt), CtrlC():
        del target  # Python's handler would raise inside the finaliser, where it is dropped


def test_a_second_ctrl_c_raises_at_once() -> None:
    with CtrlC() as ctrl_c:
        _press()
        with pytest.raises(KeyboardInterrupt):
            _press()
        ctrl_c.pressed = False  # (leave the block quietly)


def test_without_ctrl_c_nothing_is_raised() -> None:
    with CtrlC() as ctrl_c:
        ctrl_c.check()
    assert not ctrl_c.pressed
