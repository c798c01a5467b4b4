"""Problems found in a YAML file, each with its path (`fusion.choices[2].heads`) and line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    """`("fusion", "choices", 2, "heads")` -> `fusion.choices[2].heads`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, where it is and (in the message) how to fix it."""

    path: Path
    message: str
    line: int | None = None

    def located(self, lines: Mapping[Path, int]) -> Problem:
        """This problem with the line of its path (or of the nearest enclosing path)."""
        for end in range(len(self.path), 0 if self.path else -1, -1):
            line = lines.get(tuple(self.path[:end]))
            if line is not None:
                return Problem(self.path, self.message, line)
        return self

    def __str__(self) -> str:
        where = format_path(self.path)
        return f"{where}: line {self.line}: {self.message}" if self.line else f"{where}: {self.message}"


class SpaceError(ValueError):
    """Raised with every problem of an input at once."""

    def __init__(self, problems: Sequence[Problem], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        noun = "problem" if len(self.problems) == 1 else "problems"
        body = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{head}{len(self.problems)} {noun}\n{body}")


class SectionError(ValueError):
    """Raised by a whole-model validator about one of its fields: the problem is reported at that
    field's path (and line), not at the model's."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


class InvalidDesign(ValueError):
    """A point that validates but cannot be built (e.g. interleaving unequal grids)."""


class UnknownGeometry(ValueError):
    """An expert whose grid cannot be known without loading it (and no `tokens` is set)."""
