"""One trial's outcome, whatever happens in it: the options a trial runs with, and the rules that
turn what it raises or measures into a result. Torch-free, so a worker of a non-VLM evaluator
(a table lookup, a plugin) never imports torch; VLM training is `trials.train`.

Failures never escape: NaN/inf loss or metrics -> "nan", out of memory -> "oom", a design found
impossible while building -> "invalid", anything else -> "error".
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from search_space import Failure, FailureReason, InvalidDesign, Resources, TrialConfig, TrialResult

if TYPE_CHECKING:
    from trials.cache import FeatureCache

Report = Callable[[int, dict[str, float]], bool]   # (step, metrics) -> stop now (pruned)?
Progress = Callable[[int, int, float], None]       # (step, total, loss)
Failed = Callable[[FailureReason, str], TrialResult]


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrialOptions:
    steps: int | None = None                 # override the point's train.steps
    device: str = "auto"                     # auto: cuda when available
    cache: FeatureCache | None = None
    report: Report | None = None
    report_at: frozenset[int] = frozenset()  # extra evaluation steps (early-stopping rungs)
    progress: Progress | None = None
    eval_batch: int = 64
    resources: Resources = field(default_factory=Resources)  # the space's search.resources
    random_weights: bool = False  # real checkpoints' architectures, random weights (benchmarks)


def run_trial(point: TrialConfig, options: TrialOptions | None = None) -> TrialResult:
    """Train and evaluate `point` (a VLM, data-parallel when `options.resources.world_size` > 1),
    or hand it to its evaluator; always a result."""
    from trials.evaluators import evaluator

    options = options or TrialOptions()
    if point.trains_vlm:  # (the VLM evaluator keeps its own guards: OOM, NaN, ranks)
        return evaluator(point.evaluator)(point, options)

    def failed(reason: FailureReason, message: str) -> TrialResult:
        return TrialResult(point, "failed", 0, failure=Failure(reason, message))

    return finite(guarded(lambda: evaluator(point.evaluator)(point, options), failed))


def finite(result: TrialResult) -> TrialResult:
    """A result whose metrics are NaN or infinite is a failed trial ("nan"), never a point."""
    bad = sorted(name for name, value in result.metrics.items() if not math.isfinite(value))
    if result.status == "failed" or not bad:
        return result
    return TrialResult(result.config, "failed", result.steps,
                       failure=Failure("nan", f"non-finite {', '.join(bad)}"), history=result.history)


def out_of_memory() -> tuple[type[BaseException], ...]:
    torch = sys.modules.get("torch")  # only where torch is in use can it run out of GPU memory
    return (MemoryError, torch.cuda.OutOfMemoryError) if torch is not None else (MemoryError,)


def guarded(evaluate: Callable[[], TrialResult], failed: Failed) -> TrialResult:
    """`evaluate()`; whatever it raises becomes a failed result with the right reason."""
    try:
        return evaluate()
    except NonFiniteLoss as exc:
        return failed("nan", str(exc))
    except out_of_memory() as exc:
        return failed("oom", "out of memory" + (f": {exc}" if str(exc) else ""))
    except InvalidDesign as exc:
        return failed("invalid", str(exc))
    except Exception as exc:  # the search goes on; the message says what happened
        return failed("error", f"{type(exc).__name__}: {exc}")
