"""The validation's MLflow side on a real tracking store: no parent run -> None; a failing MLflow
is said once and stops tracking, never the validation; the plot is a PNG."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dashboard import FidelityDot, ValidationTracker, fidelity_png, open_client


def test_the_plot_is_a_png_with_or_without_ci() -> None:
    dots = [FidelityDot("#1", 0.4, 0.5, 0.05, True), FidelityDot("#2", 0.3, 0.45, math.nan, False),
            FidelityDot("#3", math.nan, 0.2, 0.0, False)]
    assert fidelity_png(dots, "accuracy", "t").startswith(b"\x89PNG")
    assert fidelity_png([], "accuracy", "empty").startswith(b"\x89PNG")


@pytest.mark.slow  # (a new MLflow database)
def test_no_parent_is_none_and_a_failure_is_said_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = open_client(uri)
    assert ValidationTracker.find(client, uri, "nope") is None
    said: list[str] = []
    tracker = ValidationTracker(client, "nope", "999", "no-such-run", uri, said.append)
    tracker.summary({"kendall_tau": 0.5}, 10, [], "accuracy")  # the parent run does not exist
    tracker.summary({"kendall_tau": 0.5}, 10, [], "accuracy")
    assert len(said) == 1 and "the validation goes on" in said[0] and not tracker.live
