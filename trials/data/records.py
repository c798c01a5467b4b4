"""A LLaVA conversation JSON as an Arrow table: streamed, validated, cached, memory-mapped.

`ijson` reads the JSON list one record at a time into `datasets.Dataset.from_generator`, so a
665k-record file is never a Python list; the table is written once under the datasets cache
(`HF_DATASETS_CACHE`), keyed by the file's resolved path, size and mtime (an edited file is read
again), and memory-mapped afterwards. Columns: `id`, `image` (the normalised relative path; null
for a text-only record), `conversations` (every {from, value} turn as written), `skill` (`skill`
or `category`, default "vqa"), and derived from the first human turn followed by a gpt turn:
`question` (its `<image>` tag removed) and `answer` (null when a record has no such pair).
Every malformed record is named in one `DataError` (the first LISTED, the rest counted).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from trials.data.base import Turn

DEFAULT_SKILL = "vqa"
IMAGE_TAG = "<image>"
ROLES = ("human", "gpt", "system")
LISTED = 10          # problems spelled out in one error; the rest are counted
SCHEMA = "llava-records/2"  # part of the cache key: bump when the columns or the checks change

FORMAT = ("a JSON list of {'id', 'image': 'path/under/image_folder.jpg' (absent: text-only), "
          "'conversations': [{'from': 'human', 'value': '<image>\\nquestion'}, "
          "{'from': 'gpt', 'value': 'answer'}, ...]}")


class DataError(ValueError):
    """A data set that cannot be loaded; the message names the problem and the fix."""


class Problems:
    """What is wrong, kept in bounded memory: the first LISTED messages and a count of all."""

    def __init__(self) -> None:
        self.first: list[str] = []
        self.count = 0

    def add(self, problem: str) -> None:
        self.count += 1
        if len(self.first) < LISTED:
            self.first.append(problem)

    def __bool__(self) -> bool:
        return self.count > 0

    def listed(self) -> str:
        more = f"; and {self.count - len(self.first)} more" if self.count > len(self.first) else ""
        return "; ".join(self.first) + more


def features() -> Any:
    from datasets import Features, List, Value

    text = Value("string")
    return Features({"id": text, "image": text, "conversations": List({"from": text, "value": text}),
                     "skill": text, "question": text, "answer": text})


# ---- one record --------------------------------------------------------------------------------

Check = Callable[[str, dict[str, Any]], str | None]


def _conversations(rid: str, item: dict[str, Any]) -> str | None:
    turns = item.get("conversations")
    if "conversations" not in item:
        return f"record '{rid}' has no 'conversations'"
    if not isinstance(turns, list) or not turns:
        return f"record '{rid}': 'conversations' must be a non-empty list of turns, got {turns!r:.60}"
    for n, t in enumerate(turns):
        if not isinstance(t, dict) or t.get("from") not in ROLES or not isinstance(t.get("value"), str):
            return (f"record '{rid}': turn {n} of 'conversations' must be {{'from': one of "
                    f"{', '.join(ROLES)}, 'value': text}}, got {t!r:.60}")
    if not any(t["from"] == "gpt" for t in turns):
        return f"record '{rid}': 'conversations' has no gpt turn (nothing to learn)"
    return None


def _image(rid: str, item: dict[str, Any]) -> str | None:
    if "image" not in item:
        return None  # a text-only record
    image = item["image"]
    if not isinstance(image, str) or not image.strip():
        return f"record '{rid}': 'image' must be one relative path, got {image!r:.60}"
    return None


def _tags(rid: str, item: dict[str, Any]) -> str | None:
    tags = sum(t["value"].count(IMAGE_TAG) for t in item["conversations"])
    if tags > 1:
        return f"record '{rid}' has {tags} '{IMAGE_TAG}' tags; a record has one image, so at most one tag"
    if tags and "image" not in item:
        return f"record '{rid}' has an '{IMAGE_TAG}' tag but no 'image'; add its image or remove the tag"
    if "image" in item and not tags and not any(t["from"] == "human" for t in item["conversations"]):
        return f"record '{rid}' has an image but no human turn to show it in; add one with '{IMAGE_TAG}'"
    return None


CHECKS: tuple[Check, ...] = (_conversations, _image, _tags)  # in order: later ones trust earlier ones


def first_pair(turns: list[dict[str, str]]) -> tuple[str, str] | None:
    """The first human turn's text followed directly by a gpt turn's text, or None."""
    for asked, told in pairwise(turns):
        if asked["from"] == "human" and told["from"] == "gpt":
            return asked["value"], told["value"]
    return None


def parse(index: int, item: object) -> dict[str, Any] | str:
    """The record's row, or what is wrong with it."""
    if not isinstance(item, dict):
        return f"record #{index} is a JSON {type(item).__name__}, not an object"
    rid = str(item.get("id", f"#{index}"))
    for check in CHECKS:
        problem = check(rid, item)
        if problem:
            return problem
    turns = [{"from": t["from"], "value": t["value"]} for t in item["conversations"]]
    pair = first_pair(turns)
    image = item.get("image")
    return {"id": rid, "image": None if image is None else os.path.normpath(image.strip()),
            "conversations": turns, "skill": str(item.get("skill", item.get("category", DEFAULT_SKILL))),
            "question": None if pair is None else pair[0].replace(IMAGE_TAG, "").strip(),
            "answer": None if pair is None else pair[1].strip()}


# ---- the file ----------------------------------------------------------------------------------

def _one_line(err: Exception) -> str:
    """The parser's message on one line (yajl's points at the spot over three)."""
    return " ".join(str(err).split())


_JSON_TYPES = {"start_map": "dict", "string": "str", "number": "number", "boolean": "bool", "null": "null"}


def _top_level(path: Path, what: str) -> None:
    """The file must hold a non-empty JSON list (only its first two tokens are read here)."""
    import ijson

    with open(path, "rb") as handle:
        try:
            events = iter(ijson.parse(handle))
            _, event, _ = next(events)
            _, then, _ = next(events) if event == "start_array" else (None, None, None)
        except (ijson.JSONError, StopIteration) as err:
            raise DataError(f"{what} '{path}' is not valid JSON ({_one_line(err) or 'empty file'}); it "
                            f"must hold {FORMAT}") from err
    if event != "start_array":
        raise DataError(f"{what} '{path}' holds a JSON {_JSON_TYPES.get(event, event)}, not a list of "
                        f"records; it must hold {FORMAT}")
    if then == "end_array":
        raise DataError(f"{what} '{path}' holds an empty list: no records; it must hold {FORMAT}")


def generate(path: str, what: str) -> Iterator[dict[str, Any]]:
    """Rows of the file, one record at a time; raises DataError (after reading it all) naming
    every malformed record."""
    import ijson

    problems = Problems()
    read = 0
    with open(path, "rb") as handle:
        try:
            for index, item in enumerate(ijson.items(handle, "item", use_float=True)):
                read = index + 1
                row = parse(index, item)
                if isinstance(row, str):
                    problems.add(row)
                elif not problems:
                    yield row
        except ijson.JSONError as err:
            raise DataError(f"{what} '{path}' is not valid JSON in record #{read} ({_one_line(err)}); "
                            f"it must hold {FORMAT}") from err
    if problems:
        raise DataError(f"{problems.count} record(s) of '{path}' cannot be used: {problems.listed()}; "
                        f"fix or remove them (each must be {FORMAT})")


def cache_key(path: Path) -> str:
    """Changes when the file does (resolved path, size, mtime) or the table's schema does."""
    st = path.stat()
    key = f"{SCHEMA}\0{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


@contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars from datasets (a CLI's error output stays one line)."""
    import datasets

    shown = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()


def read_records(path: Path, what: str = "data.path") -> Any:
    """The file as a memory-mapped `datasets.Dataset` (built once per file version); `what`
    names the file in errors (the YAML field or the command's argument)."""
    import datasets
    from datasets.exceptions import DatasetGenerationError

    if not path.is_file():
        raise DataError(f"{what} '{path}' does not exist; point {what} at a LLaVA JSON file ({FORMAT})")
    _top_level(path, what)
    key = cache_key(path)
    try:
        with _quiet():
            return datasets.Dataset.from_generator(
                generate, features=features(), gen_kwargs={"path": str(path), "what": what},
                cache_dir=os.environ.get("HF_DATASETS_CACHE") or None, fingerprint=key)
    except DatasetGenerationError as err:
        if isinstance(err.__cause__, DataError):
            raise err.__cause__ from None
        raise


# ---- reading the table -------------------------------------------------------------------------


class ArrowTurns:
    """A TurnSource over chosen rows of the table: `turns[i]` is row `rows[i]`'s conversation as
    ((role, text), ...), read from the memory-mapped column when asked."""

    def __init__(self, table: Any, rows: np.ndarray) -> None:
        self.table, self.rows = table, np.asarray(rows, dtype=np.int64)
        self._column: Any = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Turn, ...]:
        if self._column is None:
            self._column = self.table.data.column("conversations")
        return tuple((t["from"], t["value"]) for t in self._column[int(self.rows[index])].as_py())

    def __getstate__(self) -> dict[str, Any]:
        return {"table": self.table, "rows": self.rows, "_column": None}  # the table pickles by its file


def column(table: Any, name: str) -> Any:
    """One column of the table (a pyarrow ChunkedArray over the memory-mapped file)."""
    return table.data.column(name)


def values_at(chunked: Any, rows: np.ndarray) -> list[Any]:
    """`chunked[rows]` as Python values, read chunk by chunk: pyarrow's ChunkedArray.take joins
    the whole column first (a copy of, say, every answer of a 665k-record file)."""
    import pyarrow as pa

    rows = np.asarray(rows, dtype=np.int64)
    bounds = np.cumsum([0, *(len(c) for c in chunked.chunks)])            # (chunks + 1,)
    which = np.searchsorted(bounds, rows, side="right") - 1               # (R,) chunk of each row
    order = np.argsort(which, kind="stable")
    cuts = np.flatnonzero(np.diff(which[order])) + 1
    out: list[Any] = [None] * len(rows)
    for part in np.split(order, cuts) if len(rows) else []:
        k = int(which[part[0]])
        values = chunked.chunk(k).take(pa.array(rows[part] - bounds[k])).to_pylist()
        for i, value in zip(part.tolist(), values, strict=True):
            out[i] = value
    return out
