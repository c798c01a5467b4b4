"""A search spec from YAML text, shared by the search tests of both backends."""

from __future__ import annotations

from pathlib import Path

from search_space import parse
from trials.search.study import SearchSpec


def make_spec(tmp_path: Path, text: str, **changes: object) -> SearchSpec:
    space = parse(text).space
    base = {"study": space.name, "space": space, "space_yaml": text, "trials": space.search.trials,
            "concurrency": space.search.concurrency, "storage": f"sqlite:///{tmp_path}/study.db",
            "run_dir": tmp_path}
    return SearchSpec(**{**base, **changes})
