"""Stored designs written before a YAML name changed meaning, read as what they ran.

`mr_adapter` was a late fusion (one gated adapter after the cached experts) until the faithful
LLaVA-HR operator took the name (adapters inside the primary ViT, `fusions.MRAdapter`). Every
design written since carries `at` in its canonical fusion (null included), so a stored fusion
that is exactly `{"kind": "mr_adapter"}` is an old late-fusion result: it reads as
`gated_injection`, the same maths under its new name. A YAML a user writes is not touched:
there `{kind: mr_adapter}` is the faithful operator.
"""

from __future__ import annotations

from typing import Any

LATE_MR_ADAPTER = {"kind": "mr_adapter"}


def stored_design(config: dict[str, Any]) -> dict[str, Any]:
    """A stored canonical design (`TrialConfig.canonical()`) as today's YAML says what it ran."""
    if config.get("fusion") == LATE_MR_ADAPTER:
        return {**config, "fusion": {"kind": "gated_injection"}}
    return config
