"""Numbers as the YAML may give them: whole numbers that are not booleans (`steps: true` is not one
step), bounded so that no size or seed is absurd, and floats that are finite (the models' configs
refuse `.inf` and `nan`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

MAX_COUNT = 10**9        # steps, records, queries, trials ...: more is a typo, not a plan
MAX_SEED = 2**32 - 1     # numpy's and Optuna's seeds


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is a boolean, not a whole number; write the number")
    return value


WholeNumber = Annotated[int, BeforeValidator(_not_bool), Field(ge=-MAX_COUNT, le=MAX_COUNT)]
PositiveInt = Annotated[int, BeforeValidator(_not_bool), Field(ge=1, le=MAX_COUNT)]
Seed = Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=MAX_SEED)]
