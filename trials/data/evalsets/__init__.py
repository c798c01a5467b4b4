"""Evaluation sets in their released formats: importing this package registers one loader per
format of `search_space.eval_formats.EVAL_FORMATS` into `EVAL_LOADERS` (same names).

`load_evalset(spec, image_size, pad)` reads one set; `check_evalsets(specs, image_size)` reads them
all before a search or a trial trains, raising one DataError that lists every set's problems.
"""

from __future__ import annotations

from collections.abc import Sequence

from search_space import EvalSpec
from trials.data.base import EVAL_LOADERS, EvalSet
from trials.data.evalsets import docvqa, gqa, mmbench, pope, scienceqa, vqa
from trials.data.images import RGB8
from trials.data.llava import DataError

__all__ = ["EVAL_LOADERS", "check_evalsets", "docvqa", "gqa", "load_evalset", "mmbench", "pope",
           "scienceqa", "vqa"]

def load_evalset(spec: EvalSpec, image_size: int, pad: RGB8 | None = None) -> EvalSet:
    """The set the spec names, its images decoded at `image_size` (padded square with `pad`)."""
    return EVAL_LOADERS.get(spec.format)(spec, image_size, pad)


def check_evalsets(specs: Sequence[EvalSpec], image_size: int) -> None:
    """Read every set as a trial would (records parsed, every image opened); one DataError lists
    the problems of every set that cannot be used."""
    problems = []
    for spec in specs:
        try:
            load_evalset(spec, image_size)
        except DataError as err:
            problems.append(str(err))
    if problems:
        raise DataError(f"{len(problems)} of the {len(specs)} eval set(s) under data.eval cannot be used:\n"
                        + "\n".join(f"- {problem}" for problem in problems))
