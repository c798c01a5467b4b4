"""Safe YAML loading that remembers the line of every path, and canonical YAML dumping."""

from __future__ import annotations

import re
from typing import Any

import yaml

from search_space.errors import Path, Problem, SpaceError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as `1e-3` (YAML 1.1 reads a string)."""


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in
                       ("str", "int", "float", "bool", "null", "map", "seq", "timestamp"))


MAX_NODES = 100_000   # nodes a YAML may expand to (aliases included): a space is a few hundred
MAX_DEPTH = 64        # nesting a YAML may have
MERGE = "tag:yaml.org,2002:merge"


class _Budget:
    """What the walk may still build: a bomb of aliases or nesting is refused, not expanded."""

    def __init__(self) -> None:
        self.nodes = 0

    def spend(self, node: yaml.Node, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SpaceError([Problem((), f"the YAML expands to more than {MAX_NODES:,} values (aliases "
                                          "repeating aliases?); write the space out plainly",
                                      node.start_mark.line + 1)])
        if depth > MAX_DEPTH:
            raise SpaceError([Problem((), f"the YAML nests more than {MAX_DEPTH} levels deep; a space "
                                          "needs a handful", node.start_mark.line + 1)])


def _walk(loader: _Loader, node: yaml.Node, path: Path, lines: dict[Path, int],
          problems: list[Problem], budget: _Budget) -> Any:
    """Build plain Python data from `node`, recording `lines[path]` (1-based). A tag other than
    plain data's (`!!python/...`, `!custom`) is refused, never constructed."""
    budget.spend(node, len(path))
    lines.setdefault(path, node.start_mark.line + 1)
    if node.tag not in PLAIN_TAGS:
        problems.append(Problem(path, f"YAML tag '{node.tag}' is not allowed: a YAML holds plain data "
                                "(custom components come in as installed Python entry points); "
                                "remove the tag", node.start_mark.line + 1))
        return None
    if isinstance(node, yaml.MappingNode):
        return _mapping(loader, node, path, lines, problems, budget)
    if isinstance(node, yaml.SequenceNode):
        return [_walk(loader, item, (*path, i), lines, problems, budget) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _mapping(loader: _Loader, node: yaml.MappingNode, path: Path, lines: dict[Path, int],
             problems: list[Problem], budget: _Budget) -> dict[Any, Any]:
    """A mapping; merge keys (`<<: *anchor`) merged as YAML says: the mapping's own keys win, and
    only its own keys written twice are a duplicate."""
    own = {id(key) for key, _ in node.value if key.tag != MERGE}
    if len(own) != len(node.value):
        pairs = list(node.value)
        loader.flatten_mapping(node)  # the merged pairs first, then the mapping's own
        flattened, node.value = node.value, pairs  # an anchor's node is shared: leave it as written
    else:
        flattened = node.value
    out: dict[Any, Any] = {}
    came_from_own: dict[Any, bool] = {}
    for key_node, value_node in flattened:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool) and key is not None:
            problems.append(Problem(path, "mapping keys must be plain scalars", key_node.start_mark.line + 1))
            continue
        mine = id(key_node) in own
        if key in out and mine and came_from_own[key]:
            problems.append(Problem((*path, key), f"duplicate key '{key}'; keep one of them",
                                    key_node.start_mark.line + 1))
            continue
        lines[(*path, key)] = key_node.start_mark.line + 1
        out[key] = _walk(loader, value_node, (*path, key), lines, problems, budget)
        came_from_own[key] = mine
    return out


def _deep_line(text: str) -> int | None:
    """The line where brackets first nest deeper than MAX_DEPTH (what overflows the parser)."""
    depth, line = 0, 1
    for char in text:
        line += char == "\n"
        depth += (char in "[{") - (char in "]}")
        if depth > MAX_DEPTH:
            return line
    return None


def load_yaml(text: str, source: str = "") -> tuple[Any, dict[Path, int]]:
    """Parse YAML safely: (data, {path: line}). Raises `SpaceError` on syntax errors."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpaceError([Problem((), "the file is empty; write a search space or a point", 1)],
                             source)
        lines: dict[Path, int] = {}
        problems: list[Problem] = []
        data = _walk(loader, node, (), lines, problems, _Budget())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = f"YAML syntax error: {exc.problem or exc.context}"
        raise SpaceError([Problem((), message, line)], source) from None
    except yaml.YAMLError as exc:
        raise SpaceError([Problem((), f"YAML error: {exc}")], source) from None
    except SpaceError as exc:
        raise SpaceError(exc.problems, source) from None
    except RecursionError:
        raise SpaceError([Problem((), f"the YAML nests too deeply to read (more than {MAX_DEPTH} levels "
                                      "is never a space)", _deep_line(text))], source) from None
    finally:
        loader.dispose()
    if problems:
        raise SpaceError(problems, source)
    return data, lines


def dump_yaml(data: Any) -> str:
    """Block-style YAML with keys in the order given (used to write points back)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
