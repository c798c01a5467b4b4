"""A range is only as valid as each value in it: `{low: 16, high: 64}` over `tokens` passes at
both ends and fails at 17. Checked against the point model's own field (its validators included),
so a rule added to a field is checked over ranges with no code here."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from search_space.errors import Problem
from search_space.ranges import Choices, FloatRange, IntRange


def range_problems(space: Any) -> list[Problem]:
    """Each range's values must be valid values of its field: its ends (heads >= 1), then every
    value inside (tokens must be perfect squares)."""
    out: list[Problem] = []
    _walk_ranges(space, (), out)
    return out


def _walk_ranges(value: Any, path: tuple, out: list[Problem]) -> None:
    if isinstance(value, Choices):
        for i, v in enumerate(value.choices):
            _walk_ranges(v, (*path, "choices", i), out)
        return
    if isinstance(value, dict):  # the pool: name -> expert
        for key, v in value.items():
            _walk_ranges(v, (*path, key), out)
        return
    if not isinstance(value, BaseModel):
        return
    point_model = getattr(type(value), "point_model", None)
    for name in type(value).model_fields:
        field = getattr(value, name)
        if isinstance(field, IntRange | FloatRange) and point_model is not None:
            info = point_model.model_fields[name]
            adapter = TypeAdapter(info.annotation if not info.metadata
                                  else _annotated(info.annotation, info.metadata))
            ends = [Problem((*path, name, end), msg) for end in ("low", "high")
                    if (msg := _refusal(adapter, getattr(field, end)))]
            out += ends or _inner_values(adapter, field, (*path, name))
        else:
            _walk_ranges(field, (*path, name), out)


def _refusal(adapter: TypeAdapter, value: Any) -> str | None:
    """Why the field refuses `value`, or None."""
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        return exc.errors()[0]["msg"].removeprefix("Value error, ")
    return None


MAX_CHECKED = 100_000  # values of one range checked one by one (beyond: its ends only)


def _inner_values(adapter: TypeAdapter, field: IntRange | FloatRange, path: tuple) -> list[Problem]:
    """A rule that holds for the ends may fail inside (tokens must be perfect squares)."""
    values = field.values()
    if not values or len(values) > MAX_CHECKED:
        return []
    bad = next((v for v in values if _refusal(adapter, v)), None)
    if bad is None:
        return []
    good = [v for v in values if not _refusal(adapter, v)]
    fix = (f"list the values it allows instead: {{choices: {good[:16]}}}" if good
           else "no value in it is allowed; change the range")
    return [Problem(path, f"the range {field.low}..{field.high} includes {bad}, which is "
                    f"refused: {_refusal(adapter, bad)}; {fix}")]


def _annotated(annotation: Any, metadata: list[Any]) -> Any:
    return Annotated[(annotation, *metadata)]
