"""A fault-injecting evaluator, installed by the fault tests as a real distribution with a
`vlmsearch.evaluators` entry point (see conftest.py): the way a user adds an evaluator.

Parameters: `fault` (none / raise / oom / nan / slow) and `x` (which design). Environment:
`FAULT_LOG` gets a line "pid x fault" per evaluation started (so a test can count what ran and
find the process to kill); `FAULT_DELAY_S` makes every evaluation take that long; a `slow`
design takes `FAULT_SLOW_S` (30 by default).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from search_space.components import Evaluator
from search_space.result import TrialResult

FAULTS = ("none", "raise", "oom", "nan", "slow")


def _log(x: int, fault: str) -> None:
    path = os.environ.get("FAULT_LOG")
    if path:
        with open(path, "a") as log:
            log.write(f"{os.getpid()} {x} {fault}\n")


def evaluate(point: Any, options: Any) -> TrialResult:
    fault, x = str(point.parameters["fault"]), int(point.parameters["x"])
    _log(x, fault)
    slow = float(os.environ.get("FAULT_SLOW_S", "30")) if fault == "slow" else 0.0
    time.sleep(max(slow, float(os.environ.get("FAULT_DELAY_S", "0"))))
    if fault == "raise":
        raise RuntimeError(f"injected fault in design x={x}")
    if fault == "oom":
        bytearray(1 << 50)  # a real allocation of 1 PiB, which no machine here can satisfy
    accuracy = math.nan if fault == "nan" else 0.9 - 0.02 * x
    metrics = {"accuracy": accuracy, "latency_ms": 5.0 + 3.0 * ((x * 7) % 11)}
    return TrialResult(point, "complete", 1, metrics, history=[(1, metrics)])


EVALUATOR = Evaluator(trains_vlm=False, parameters={"fault": FAULTS, "x": tuple(range(64))},
                      description="fault injection for vlmsearch's tests", evaluate=evaluate)
