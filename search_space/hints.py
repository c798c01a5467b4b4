"""What a schema error's bare message leaves out: the name the user meant (keys written as HF
TrainingArguments or LLaVA's scripts spell them), and the fix for values that look like
something else (YAML's `none`, a range written as a string or a list, an empty section)."""

from __future__ import annotations

import re
from typing import Any

# a key as other tools spell it -> ours (suggested only where ours is a key of the schema)
KEY_ALIASES = {
    "learning_rate": "lr", "max_steps": "steps", "num_steps": "steps", "train_steps": "steps",
    "per_device_train_batch_size": "batch_size", "train_batch_size": "batch_size", "batch": "batch_size",
    "bs": "batch_size", "wd": "weight_decay", "warmup_ratio": "warmup", "num_heads": "heads",
    "num_attention_heads": "heads", "num_queries": "queries", "num_tokens": "tokens",
    "layer": "layers", "mm_vision_select_layer": "layers", "model_name_or_path": "source",
    "vision_tower": "source", "model": "source", "path": "source", "mm_projector_type": "projector",
    "expert": "experts", "objective": "objectives", "constraint": "constraints", "num_trials": "trials",
    "n_trials": "trials", "bf16": "precision",
}

# per field: what a valid value looks like (added to a bare type or bound error on it)
FIELD_HINTS = {
    "tokens": "tokens is a perfect square >= 1 (16 is a 4x4 grid), or null to keep every token",
    "queries": "queries is a whole number >= 1 (sva: a perfect square)",
    "heads": "heads is a whole number >= 1 that divides the width",
    "layers": "layers is a layer index (-1 is the last) or a list of them",
}

_NULL_WORDS = {"none", "nil", "nothing", "n/a", "na", "empty"}
_RANGE_TEXT = re.compile(r"^\s*[-+]?[\d.]+(e[-+]?\d+)?\s*(\.\.|-|–|to)\s*[-+]?[\d.]+(e[-+]?\d+)?\s*$",
                         re.IGNORECASE)
_SCALAR_TYPES = ("int_", "float_", "string_", "bool_", "literal_error", "greater_than", "less_than")


def key_alias(key: str, vocabulary: list[str]) -> str | None:
    ours = KEY_ALIASES.get(key.lower())
    return f"; did you mean '{ours}'? (vlmsearch's name for {key})" if ours in vocabulary else None


def value_hint(kind: str, value: Any, field: str | int | None) -> str:
    """A fix for a value refused with error type `kind`, or ''."""
    if isinstance(value, str) and value.strip().lower() in _NULL_WORDS:
        return f"; YAML reads '{value}' as text: for no value write null (or ~)"
    if isinstance(value, str) and _RANGE_TEXT.match(value):
        return "; a range is written {low: A, high: B} (a mapping, not text)"
    if isinstance(value, list) and kind.startswith(_SCALAR_TYPES):
        return ("; a list is not one value: write a range as {low: A, high: B}, or alternatives as "
                "{choices: [A, B]}")
    if isinstance(field, str) and field in FIELD_HINTS and kind.startswith(_SCALAR_TYPES):
        return f"; {FIELD_HINTS[field]}"
    return ""


def empty_section(kind: str, value: Any, path: tuple) -> str | None:
    """The message for a section written with nothing below it (YAML: null), or None."""
    if value is None and kind in ("model_type", "dict_type", "model_attributes_type", "list_type") and path:
        return (f"`{path[-1]}:` is empty (with nothing below it YAML reads null); give its keys, or "
                "remove the line to take the defaults")
    return None
