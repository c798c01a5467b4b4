"""What turns one design point into measured numbers: `run_trial(point, TrialOptions(...))`
(any evaluator; always a result), the feature cache, and the search drivers in
`trials.search`. Names are imported when first used, so `import trials` loads no torch."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {  # public name -> the module that defines it
    "TrialOptions": "trials.outcome", "run_trial": "trials.outcome",
    "FeatureCache": "trials.cache", "default_cache": "trials.train", "with_steps": "trials.train",
    "train_vlm": "trials.train",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'trials' has no attribute '{name}'")
    return getattr(import_module(_WHERE[name]), name)
