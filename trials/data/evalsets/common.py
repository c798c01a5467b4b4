"""What every eval-set loader shares: the files a spec names, JSON read one record at a time (so a
`limit` stops early and a large annotation file is never whole in memory), every bad record of a
file listed in one DataError, image checks, the prompt, and the EvalSet itself."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import ijson

from search_space import EvalSpec, FileField
from trials.data.base import EvalSet, QADataset
from trials.data.images import RGB8, ImageFiles
from trials.data.llava import LISTED, DataError
from trials.data.records import Problems as Gathered

T = TypeVar("T")
Kinds = type | tuple[type, ...]
Score = Callable[[list[str]], dict[str, float]]
Choices = tuple[str, ...]

_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
               float: "a number", type(None): "null"}
_EVENT_KINDS = {"start_map": "a JSON object", "start_array": "a JSON list", "string": "a JSON string",
                "number": "a JSON number", "integer": "a JSON number", "double": "a JSON number",
                "boolean": "a JSON boolean", "null": "JSON null"}


def fail(spec: EvalSpec, problem: str) -> DataError:
    """The error for a problem of the spec's files: which set, what is wrong, what is expected."""
    return DataError(f"eval set '{spec.label}' (format '{spec.format}'): {problem}; format "
                     f"'{spec.format}' expects {spec.info.layout}")


def listed(problems: Sequence[str]) -> str:
    """The first LISTED problems, and how many more (as every data error lists them)."""
    gathered = Gathered()
    for problem in problems:
        gathered.add(problem)
    return gathered.listed()


def json_kind(value: object) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


def source(spec: EvalSpec, key: FileField = "path") -> Path:
    """The file the spec names under `key`; it must exist."""
    path = Path(str(getattr(spec, key))).expanduser()
    if not path.is_file():
        raise fail(spec, f"{key} file '{path}' does not exist")
    return path


def image_folder(spec: EvalSpec, key: FileField = "path") -> Path:
    """`image_folder`, or the folder of the spec's `key` file."""
    folder = Path(spec.image_folder).expanduser() if spec.image_folder else source(spec, key).parent
    if not folder.is_dir():
        raise fail(spec, f"image_folder '{folder}' is not a folder")
    return folder


def _error_text(err: Exception) -> str:
    text = err.args[0] if err.args else err
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def _items(spec: EvalSpec, key: FileField, prefix: str, pairs: bool) -> Iterator[Any]:
    """The values at `prefix` of the JSON file (with `pairs`: the (key, value) pairs of the object
    there), parsed one at a time; a file that is not JSON raises DataError."""
    path = source(spec, key)
    with open(path, "rb") as handle:
        parse = ijson.kvitems if pairs else ijson.items
        try:
            yield from parse(handle, prefix, use_float=True)
        except (ijson.JSONError, UnicodeDecodeError) as err:
            raise fail(spec, f"{key} file '{path}' is not valid JSON ({_error_text(err)})") from err


def scalar(spec: EvalSpec, key: FileField, prefix: str) -> Any:
    """The first value at `prefix` of the JSON file, or None."""
    with closing(_items(spec, key, prefix, pairs=False)) as values:
        return next(values, None)


def stream(spec: EvalSpec, key: FileField, prefix: str, what: str, pairs: bool = False) -> Iterator[Any]:
    """The records at `prefix` ("item": a top-level list; "data.item": the list under 'data'; with
    `pairs`, "" is a top-level object's entries), one at a time; none at all raises DataError
    saying what the file holds instead. `what` names the records and where they belong."""
    found = 0
    for item in _items(spec, key, prefix, pairs):
        found += 1
        yield item
    if not found:
        path = source(spec, key)
        raise fail(spec, f"{key} file '{path}' has no {what}: {_holds(path, prefix, pairs)}")


def _holds(path: Path, prefix: str, pairs: bool) -> str:
    """What a JSON file without the expected records holds, in words."""
    with open(path, "rb") as handle:
        events = ijson.parse(handle)
        _, event, _ = next(events)
        if event != "start_map":
            empty = event == "start_array" and not pairs and prefix == "item"
            return "it is an empty list" if empty else f"it holds {_EVENT_KINDS.get(event, event)}"
        keys = [value for where, kind, value in events if where == "" and kind == "map_key"]
    if not keys:
        return "it holds an empty JSON object"
    top = prefix.split(".")[0]
    if top in keys and prefix != top:
        return f"its '{top}' is empty or not a list"
    shown = ", ".join(f"'{k}'" for k in keys[:LISTED]) + (", ..." if len(keys) > LISTED else "")
    return f"it holds a JSON object with keys {shown}"


def field_problems(record: object, fields: Mapping[str, Kinds]) -> list[str]:
    """What is wrong with a record for the fields a format needs: absent, or of another JSON kind."""
    if not isinstance(record, dict):
        return [f"is {json_kind(record)}, not an object"]
    wrong = []
    for name, kinds in fields.items():
        if name not in record:
            wrong.append(f"has no '{name}'")
        elif not isinstance(record[name], kinds) or isinstance(record[name], bool):
            wrong.append(f"has '{name}' as {json_kind(record[name])}")
    return wrong


def texts(values: object, key: str | None = None) -> list[str] | None:
    """A non-empty list of strings (with `key`: of objects holding a string there), or None."""
    if not isinstance(values, list) or not values:
        return None
    found = values if key is None else [v.get(key) if isinstance(v, dict) else None for v in values]
    for text in found:
        if not isinstance(text, str):
            return None
    return found


class Images:
    """Image paths under one folder, one Path object per distinct name (sets ask several questions
    of an image; a Path per question would cost time and memory on the large ones)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._paths: dict[str, Path] = {}

    def __call__(self, name: str) -> Path:
        if name not in self._paths:
            self._paths[name] = self.folder / name
        return self._paths[name]


class Problems:
    """The bad records of one file, gathered so one error lists them all."""

    def __init__(self, spec: EvalSpec, key: FileField = "path") -> None:
        self.spec, self.key = spec, key
        self.found = Gathered()  # the first LISTED messages and a count of all

    def check(self, where: str, record: object, fields: Mapping[str, Kinds]) -> bool:
        """Whether the record has the fields; notes what is wrong if not."""
        wrong = field_problems(record, fields)
        if wrong:
            self.found.add(f"{where} {' and '.join(wrong)}")
        return not wrong

    def add(self, problem: str) -> None:
        self.found.add(problem)

    def raise_any(self, what: str = "record(s)") -> None:
        if self.found:
            path = source(self.spec, self.key)
            raise fail(self.spec, f"{self.found.count} {what} of {self.key} file '{path}' cannot be used: "
                                  f"{self.found.listed()}")


def first(spec: EvalSpec, records: Iterable[T]) -> Iterator[T]:
    """The first `spec.limit` records (all without a limit)."""
    return islice(records, spec.limit) if spec.limit is not None else iter(records)


def ask(spec: EvalSpec, body: str, suffix: str | None = None) -> str:
    """The human turn: the question (and its options), then the suffix on its own line."""
    end = spec.suffix() if suffix is None else suffix
    return f"{body}\n{end}" if end else body


@dataclass(frozen=True)
class Item:
    """One question of an eval set, as asked."""

    where: str             # the record, for messages: "question_id 42"
    image: Path | bytes    # its image file, or the encoded image
    name: str              # the image as the file names it
    question: str          # the whole human turn
    answer: str            # the first reference (shown)
    skill: str


def image_problems(items: Sequence[Item]) -> list[str]:
    """Missing or unreadable images (only the header is read; each image once; nothing kept)."""
    from PIL import Image

    problems, seen = [], set()
    for item in items:
        key = item.image if isinstance(item.image, Path) else id(item.image)
        if key in seen:
            continue
        seen.add(key)
        if isinstance(item.image, Path) and not item.image.is_file():
            problems.append(f"image '{item.name}' of {item.where} is missing ({item.image})")
            continue
        try:
            with Image.open(io.BytesIO(item.image) if isinstance(item.image, bytes) else item.image):
                pass
        except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for damaged files
            problems.append(f"image '{item.name}' of {item.where} is unreadable ({err})")
    return problems


def evalset(spec: EvalSpec, items: Sequence[Item], size: int, pad: RGB8 | None, score: Score,
            choices: Sequence[Choices] | None = None, images_hint: str = "") -> EvalSet:
    """The EvalSet of the items: every image checked to open, `choices` kept when the set is
    answered by likelihood (a set without closed choices cannot be), `score` checked for length."""
    if not items:
        raise fail(spec, "there are no questions to ask")
    likelihood = spec.answering() == "likelihood"
    if likelihood and choices is None:
        raise fail(spec, "answer_by: likelihood needs closed choices, but its questions are open-ended; "
                         "use answer_by: generate")
    problems = image_problems(items)
    if problems:
        raise fail(spec, f"{len(problems)} image(s) cannot be used: {listed(problems)}{images_hint}")
    asked = list(choices) if likelihood and choices is not None else None
    qa = QADataset(spec.label, ImageFiles([item.image for item in items], size, pad),
                   [item.question for item in items], [item.answer for item in items],
                   [item.skill for item in items])
    return EvalSet(spec, qa, asked, _checked(spec, len(items), score))


def _checked(spec: EvalSpec, n: int, score: Score) -> Score:
    def checked(predictions: list[str]) -> dict[str, float]:
        if len(predictions) != n:
            raise ValueError(f"eval set '{spec.label}' has {n} questions, got {len(predictions)} predictions")
        return score(list(predictions))

    return checked


def folder_hint(folder: Path) -> str:
    return f"; check image_folder (now '{folder}')"
