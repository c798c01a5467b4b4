"""Ranges in a space: `{choices: [...]}`, `{low, high, log?, step?}`, or a fixed value.

`tunable(T)` is the annotation of a space field whose point type is `T`. It is a union tagged by
the *shape* of the YAML value, so a bad value yields one error at its own path rather than one
per union member. Tags start with `~` and are stripped from error paths.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Annotated, Any, Generic, TypeVar, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    model_validator,
)

from search_space.numbers import WholeNumber

T = TypeVar("T")
TAG = "~"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Choices(_Strict, Generic[T]):
    """A categorical parameter: one of the listed values (each may itself hold ranges)."""

    choices: list[T] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_repeats(self) -> Choices[T]:
        seen: list[Any] = []
        for value in self.choices:
            plain = value.model_dump() if isinstance(value, BaseModel) else value
            if plain in seen:
                raise ValueError(f"choice {plain!r} is listed twice; list each choice once")
            seen.append(plain)
        return self


class _Range(_Strict):
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> _Range:
        low, high, step = self.low, self.high, self.step  # type: ignore[attr-defined]
        if low > high:
            raise ValueError(f"low ({low}) is above high ({high}); swap them")
        if self.log and low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {low}); raise low or drop log")
        if step is not None and step <= 0:
            raise ValueError(f"step must be positive (got {step})")
        if self.log and step is not None:
            raise ValueError("a range takes log or step, not both; drop one")
        return self


class IntRange(_Range):
    """Integers from low to high inclusive (optionally every `step`, or log-uniform)."""

    low: WholeNumber
    high: WholeNumber
    step: WholeNumber | None = None

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step or 1))


class FloatRange(_Range):
    """Floats from low to high (optionally on a `step` grid, which makes them finite)."""

    low: float
    high: float
    step: float | None = None

    def values(self) -> list[float] | None:
        """The finite set of values, or None for a continuous range."""
        if self.step is None:
            return None if self.high > self.low else [self.low]
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]


class _NoRange(_Strict):
    """What a `{low, high}` on a non-numeric field validates into: always an error."""

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, data: Any) -> Any:
        raise ValueError("this parameter is not a number, so it takes {choices: [...]}, "
                         "not a {low, high} range")


Range = IntRange | FloatRange


def _shape(value: Any) -> str:
    """The tag of a YAML value: a list of choices, a numeric range, or a plain value."""
    if isinstance(value, Choices):
        return TAG + "choices"
    if isinstance(value, IntRange | FloatRange):
        return TAG + "range"
    if isinstance(value, dict) and "choices" in value:
        return TAG + "choices"
    if isinstance(value, dict) and ("low" in value or "high" in value) and "kind" not in value:
        return TAG + "range"
    return TAG + "value"


def _leaf_types(annotation: Any) -> set[Any]:
    """Every plain type inside `annotation` (through Annotated, Union, Optional)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _leaf_types(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(_leaf_types(a) for a in typing.get_args(annotation)))
    return {origin or annotation}


def range_model(annotation: Any) -> type[_Strict]:
    """IntRange for int fields, FloatRange for float fields, else a model that refuses."""
    leaves = _leaf_types(annotation)
    if float in leaves:
        return FloatRange
    if int in leaves and bool not in leaves:
        return IntRange
    return _NoRange


def tunable(annotation: Any) -> Any:
    """The space annotation of a point field of type `annotation`."""
    return Annotated[
        Union[  # noqa: UP007 - tags need the explicit Union form
            Annotated[Choices[annotation], Tag(TAG + "choices")],  # type: ignore[valid-type]
            Annotated[range_model(annotation), Tag(TAG + "range")],
            Annotated[annotation, Tag(TAG + "value")],
        ],
        Discriminator(_shape),
    ]


def _plain_scalar(value: Any) -> Any:
    """One message for what no member of `Scalar` takes (not one per member)."""
    if not isinstance(value, bool | int | float | str):
        raise ValueError(f"a parameter's value is a number, a string or a boolean, not a "
                         f"{type(value).__name__}; for alternatives write {{choices: [A, B]}}, for a "
                         "range {low: A, high: B}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number; write a number")
    return value


Scalar = Annotated[Union[StrictBool, StrictInt, StrictFloat, StrictStr],  # noqa: UP007
                   BeforeValidator(_plain_scalar)]


def _scalar_shape(value: Any) -> str:
    """Like `_shape`, but a range of ints (low, high, step all ints) is an int range."""
    shape = _shape(value)
    if shape != TAG + "range" or not isinstance(value, dict):
        return shape
    ends = [value.get(k) for k in ("low", "high", "step") if value.get(k) is not None]
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in ends)
    return TAG + ("int_range" if whole else "float_range")


TunableScalar = Annotated[
    Union[  # noqa: UP007
        Annotated[Choices[Scalar], Tag(TAG + "choices")],  # type: ignore[valid-type]
        Annotated[IntRange, Tag(TAG + "int_range")],
        Annotated[FloatRange, Tag(TAG + "float_range")],
        Annotated[IntRange | FloatRange, Tag(TAG + "range")],
        Annotated[Scalar, Tag(TAG + "value")],
    ],
    Discriminator(_scalar_shape),
]
"""A free parameter of a non-VLM evaluator: a number, string or bool, a `{choices: [...]}`,
or a `{low, high, step?, log?}` range (ints when its ends are ints)."""


def is_free(value: Any) -> bool:
    """Whether a space value is a range (more than one value can be chosen)."""
    if isinstance(value, Choices):
        return len(value.choices) > 1 or any(_has_free(c) for c in value.choices)
    if isinstance(value, IntRange):
        return value.high > value.low
    if isinstance(value, FloatRange):
        return value.high > value.low
    return _has_free(value)


def _has_free(value: Any) -> bool:
    if isinstance(value, BaseModel):
        return any(is_free(getattr(value, name)) for name in type(value).model_fields)
    return False


def possible_values(value: Any) -> list[Any]:
    """Values a space field can take (a continuous range gives its two ends)."""
    if isinstance(value, Choices):
        return list(value.choices)
    if isinstance(value, IntRange):
        return value.values()
    if isinstance(value, FloatRange):
        return value.values() or [value.low, value.high]
    return [value]
