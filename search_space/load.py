"""Load a YAML file into a `SearchSpace` (or a point), reporting every problem at once."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any

from pydantic import BaseModel, ValidationError

from search_space.errors import Path, Problem, SectionError, SpaceError
from search_space.fusions import FUSIONS
from search_space.hints import empty_section, key_alias, value_hint
from search_space.point import TrialConfig
from search_space.ranges import TAG
from search_space.registry import did_you_mean, unknown_name_message
from search_space.sources import is_source_ref
from search_space.space import SearchSpace


def _field_vocabulary(model: type[BaseModel], seen: set[str] | None = None) -> set[str]:
    """Every field name of `model` and the models below it (for "did you mean" on keys)."""
    seen = set() if seen is None else seen
    names = set(model.model_fields)
    for info in model.model_fields.values():
        stack = [info.annotation]
        while stack:
            ann = stack.pop()
            if isinstance(ann, type) and issubclass(ann, BaseModel) and ann.__name__ not in seen:
                seen.add(ann.__name__)
                names |= _field_vocabulary(ann, seen)
            stack.extend(typing.get_args(ann))
    return names


_VOCABULARY = sorted(_field_vocabulary(SearchSpace) | {"choices", "low", "high", "log", "step"})


def _clean_loc(loc: tuple[Any, ...]) -> Path:
    return tuple(p for p in loc if not (isinstance(p, str) and p.startswith(TAG)))


def _message(error: dict[str, Any], loc: Path) -> str:
    kind, msg, value = error["type"], error["msg"], error.get("input")
    if kind == "union_tag_invalid":
        return unknown_name_message("fusion", value.get("kind"), FUSIONS.names())
    if kind == "union_tag_not_found":
        return f"a fusion needs `kind`: one of {', '.join(FUSIONS.names())}"
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        hint = key_alias(key, _VOCABULARY) or did_you_mean(key, _VOCABULARY) or "; remove it"
        return f"unknown key '{key}'{hint}"
    if kind == "missing":
        return "required, but missing"
    empty = empty_section(kind, value, loc)
    if empty:
        return empty
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if kind not in ("value_error", "assertion_error") and value is not None and len(repr(value)) < 60:
        msg = f"{msg} (got {value!r})"
    return msg + value_hint(kind, value, loc[-1] if loc else None)


def problems_from(error: ValidationError) -> list[Problem]:
    out: list[Problem] = []
    for err in error.errors():
        loc = _clean_loc(err["loc"])
        raised = (err.get("ctx") or {}).get("error")
        if isinstance(raised, SectionError):  # a whole-model rule about one section
            loc = (*loc, *raised.path)
        problem = Problem(loc, _message(err, loc))
        if problem not in out:
            out.append(problem)
    return out


@dataclass(frozen=True)
class Loaded:
    """A validated file with the line of every YAML path (for later checks' messages)."""

    space: SearchSpace
    lines: dict[Path, int]
    source: str

    def fail(self, problems: list[Problem]) -> SpaceError:
        return SpaceError([p.located(self.lines) for p in problems], self.source)


def parse(text: str, source: str = "<string>", base: FilePath | None = None) -> Loaded:
    """Field-level validation: syntax and schema errors, every one with path and line. `base`:
    the YAML file's folder, which relative model directories (`source: experts/colour`) are
    read against before the working directory."""
    from search_space.yaml_io import load_yaml

    data, lines = load_yaml(text, source)
    if not isinstance(data, dict):
        raise SpaceError([Problem((), "the top level must be a mapping (name:, experts:, ...)", 1)],
                         source)
    if base is not None:
        data = anchor_sources(data, base)
    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as exc:
        raise SpaceError([p.located(lines) for p in problems_from(exc)], source) from None
    return Loaded(space, lines, source)


def anchored(source: str, base: FilePath) -> str:
    """A relative `source` naming a model directory beside the YAML file: that directory's
    absolute path; anything else (a preset, an HF id, `timm:`/`open_clip:`, absolute) unchanged."""
    path = FilePath(source)
    if source.startswith(("/", "~")) or path.is_absolute() or is_source_ref(source):
        return source
    folder = base / path
    return str(folder.resolve()) if (folder / "config.json").is_file() else source


def anchor_sources(data: Any, base: FilePath) -> Any:
    """The raw YAML data with every `source:` (a value, or a `choices` list) `anchored`."""
    if isinstance(data, list):
        return [anchor_sources(item, base) for item in data]
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        if key == "source" and isinstance(value, str):
            value = anchored(value, base)
        elif key == "source" and isinstance(value, dict) and isinstance(value.get("choices"), list):
            value = {**value, "choices": [anchored(v, base) if isinstance(v, str) else v
                                          for v in value["choices"]]}
        else:
            value = anchor_sources(value, base)
        out[key] = value
    return out


def with_device_profile(space: SearchSpace, name: str | None) -> SearchSpace:
    """`space` planned for device profile `name` (a flag over `search.resources`)."""
    if name is None:
        return space
    from search_space.resources.devices import DEVICE_PROFILES

    if name not in DEVICE_PROFILES:
        raise ValueError(f"--device-profile: {DEVICE_PROFILES.unknown(name)}")
    search = space.search
    resources = search.resources.model_copy(update={"device_profile": name})
    return space.model_copy(update={"search": search.model_copy(update={"resources": resources})})


def load(path: str | FilePath, device_profile: str | None = None) -> Loaded:
    """Parse and cross-check a YAML file (planned for `device_profile` when given, over the
    YAML's); raises `SpaceError` with every problem."""
    from search_space.checks import check

    file = FilePath(path)
    if file.is_dir():
        raise SpaceError([Problem((), f"{file} is a folder, not a YAML file; give the space's .yaml "
                                      "file (e.g. examples/quickstart.yaml)")], str(file))
    if not file.is_file():
        raise SpaceError([Problem((), f"no such file: {file}; check the path")], str(file))
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpaceError([_not_utf8(file.read_bytes(), exc)], str(file)) from None
    except OSError as exc:
        raise SpaceError([Problem((), f"cannot read {file}: {exc.strerror or exc}")], str(file)) from None
    loaded = parse(text, str(file), file.parent)
    try:
        loaded = Loaded(with_device_profile(loaded.space, device_profile), loaded.lines, loaded.source)
    except ValueError as exc:
        raise SpaceError([Problem((), str(exc))], str(file)) from None
    problems = check(loaded.space)
    if problems:
        raise loaded.fail(problems)
    return loaded


def _not_utf8(data: bytes, exc: UnicodeDecodeError) -> Problem:
    line = data[:exc.start].count(b"\n") + 1
    return Problem((), f"byte 0x{data[exc.start]:02x} is not UTF-8 text; save the file as UTF-8 (a "
                       "YAML file is text: no binary data, no Latin-1)", line)


def load_point(path: str | FilePath, device_profile: str | None = None
               ) -> tuple[TrialConfig, Loaded]:
    """Load a file that must be a point (no free parameter)."""
    from search_space.sampling import compile_space

    loaded = load(path, device_profile)
    compiled = compile_space(loaded.space)
    free = compiled.free_parameters()
    if free:
        shown = ", ".join(free[:6]) + (", ..." if len(free) > 6 else "")
        raise loaded.fail([Problem((), f"this is a search space with {len(free)} free "
                                       f"parameters ({shown}); a point needs single values: fix "
                                       "them, or run it with `vlmsearch run`")])
    return compiled.only_point(), loaded
