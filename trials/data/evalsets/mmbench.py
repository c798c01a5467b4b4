"""MMBench (the released TSV: index, question, hint, A-D, answer, category, base64 image, ...),
asked as LLaVA's `model_vqa_mmbench.py --all-rounds --single-pred-prompt` asks it
("hint\\nquestion\\nA. ..\\nB. ..\\n" + the letter suffix), scored by circular evaluation: a question
counts only if every rotation of its options is answered right.

A TSV holding rotated copies (index >= 1_000_000, as the circular dev files do) is used as it is,
grouped by index % 1_000_000; otherwise each question is expanded into its rotations here. Images
stay encoded (compact bytes, one object per distinct image) until asked for.
"""

from __future__ import annotations

import base64
import binascii
import csv
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from search_space import EvalSpec
from trials.data.base import EVAL_LOADERS, EvalSet
from trials.data.evalsets.common import Item, Problems, ask, evalset, fail, source
from trials.data.images import RGB8
from trials.metrics import circular_accuracy, mmbench_option

CIRCULAR = 1_000_000       # a rotated copy's index is rotation * CIRCULAR + the question's index
LETTERS = "ABCDEFGHI"      # option columns read, in order, while present and non-empty
NEEDED = ("index", "question", "A", "B", "answer", "image")
REFERENCE = 64             # an image cell this short names the index of the row holding the image


@dataclass(frozen=True)
class Row:
    """One question of the TSV (or one rotation of it)."""

    index: int
    question: str
    hint: str
    options: tuple[str, ...]
    answer: int                 # position of the right option
    category: str
    image: bytes | int          # the encoded image, or the index of the row holding it

    @property
    def group(self) -> int:
        return self.index % CIRCULAR

    def rotated(self, by: int) -> Row:
        """The options moved left `by` places (as LLaVA's --all-rounds does), the answer with them."""
        options = self.options[by:] + self.options[:by]
        return replace(self, index=by * CIRCULAR + self.index, options=options,
                       answer=(self.answer - by) % len(options))


def _none(value: str | None) -> bool:
    """An empty cell, as LLaVA's `is_none` reads pandas' cells (NaN, 'nan', 'none')."""
    return value is None or value.strip().lower() in ("", "nan", "none")


def _index(cell: dict[str | None, str | None]) -> int | None:
    try:
        return int(str(cell.get("index")).strip())
    except ValueError:
        return None


def _parse(number: int, index: int, cell: dict[str | None, str | None], images: dict[bytes, bytes]
           ) -> Row | str:
    """The row, or what is wrong with it. `images` keeps one bytes object per distinct image."""
    where = f"row {number} (index {index})"
    options: list[str] = []
    for letter in LETTERS:
        if _none(cell.get(letter)):
            break
        options.append(str(cell[letter]).strip())
    letters = LETTERS[:len(options)]
    answer = (cell.get("answer") or "").strip()
    if _none(cell.get("question")):
        return f"{where} has no question"
    if len(options) < 2:
        return f"{where} has {len(options)} option(s) in columns A, B, ...; it needs at least two"
    if answer not in letters:
        return f"{where} has 'answer' {answer!r}, not one of its option letters {', '.join(letters)}"
    image: bytes | int
    text = (cell.get("image") or "").strip()
    if len(text) <= REFERENCE and text.isdigit():
        image = int(text)
    else:
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return f"{where} has an 'image' that is not base64"
        if not data:
            return f"{where} has no image"
        image = images.setdefault(data, data)
    hint = "" if _none(cell.get("hint")) else str(cell["hint"]).strip()
    category = "" if _none(cell.get("category")) else str(cell["category"]).strip()
    return Row(index, str(cell["question"]).strip(), hint, tuple(options), letters.index(answer), category,
               image)


def _rows(spec: EvalSpec, path: Path, problems: Problems) -> Iterator[Row]:
    """Every usable row of the first `limit` groups (groups in order of first appearance)."""
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))   # base64 images are long cells
    images: dict[bytes, bytes] = {}
    groups: set[int] = set()
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        try:
            header = reader.fieldnames or []
            absent = [name for name in NEEDED if name not in header]
            if absent:
                test = " (an MMBench test TSV has no answers: use a dev TSV)" if "answer" in absent else ""
                raise fail(spec, f"path file '{path}' is not an MMBench TSV with answers: it has no "
                                 f"column(s) {', '.join(repr(a) for a in absent)}{test}")
            for number, cell in enumerate(reader, start=2):   # line numbers: the header is line 1
                index = _index(cell)
                if index is None:
                    problems.add(f"row {number} has 'index' {cell.get('index')!r}, not an integer")
                    continue
                if index % CIRCULAR not in groups and spec.limit is not None and len(groups) >= spec.limit:
                    continue
                row = _parse(number, index, cell, images)
                if isinstance(row, str):
                    problems.add(row)
                    continue
                groups.add(row.group)
                yield row
        except (csv.Error, UnicodeDecodeError) as err:
            raise fail(spec, f"path file '{path}' is not a UTF-8 TSV ({err})") from err


def _resolved(rows: list[Row], problems: Problems) -> list[Row]:
    """Rows whose image cell names another row's index get that row's image."""
    held = {row.index: row.image for row in rows if isinstance(row.image, bytes)}
    out = []
    for row in rows:
        image = held.get(row.image) if isinstance(row.image, int) else row.image
        if image is None:
            problems.add(f"index {row.index}'s image refers to index {row.image}, which has no image")
            continue
        out.append(replace(row, image=image))
    return out


def _circular(rows: list[Row]) -> list[Row]:
    """Rows grouped by question (in order of first appearance), rotations in order; a file without
    rotated copies gets every rotation of each question."""
    if not any(row.index >= CIRCULAR for row in rows):
        rows = [row.rotated(by) for row in rows for by in range(len(row.options))]
    order = {group: rank for rank, group in enumerate(dict.fromkeys(row.group for row in rows))}
    return sorted(rows, key=lambda row: (order[row.group], row.index))


def _encoded(row: Row) -> bytes:
    if not isinstance(row.image, bytes):
        raise TypeError(f"index {row.index}'s image was not resolved")
    return row.image


def _body(row: Row) -> str:
    lines = [row.hint] if row.hint else []
    lines.append(row.question)
    lines += [f"{letter}. {option}" for letter, option in zip(LETTERS, row.options, strict=False)]
    return "\n".join(lines)


@EVAL_LOADERS.decorator("mmbench", "MMBench TSV (base64 images), circular evaluation")
def load_mmbench(spec: EvalSpec, size: int, pad: RGB8 | None) -> EvalSet:
    path = source(spec)
    problems = Problems(spec)
    rows = list(_rows(spec, path, problems))
    rows = _resolved(rows, problems)
    problems.raise_any("row(s)")
    if not rows:
        raise fail(spec, f"path file '{path}' has no questions")
    rows = _circular(rows)
    items = [Item(f"index {row.index}", _encoded(row), "base64", ask(spec, _body(row)), LETTERS[row.answer],
                  row.category or spec.format) for row in rows]
    options = [dict(zip(LETTERS, row.options, strict=False)) for row in rows]   # letter -> text, as asked
    answers = [LETTERS[row.answer] for row in rows]
    groups = [row.group for row in rows]

    def score(predictions: list[str]) -> dict[str, float]:
        chosen = [mmbench_option(p, shown) for p, shown in zip(predictions, options, strict=True)]
        return {"accuracy": circular_accuracy(groups, [c == a for c, a in zip(chosen, answers, strict=True)])}

    letters = [tuple(shown) for shown in options]
    return evalset(spec, items, size, pad, score, letters, images_hint="; fix the TSV's 'image' cells")
