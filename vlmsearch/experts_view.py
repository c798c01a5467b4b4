"""`vlmsearch experts SPACE.yaml [--similarity]`: the pool's experts as the cost model sees them
(no torch), or the linear CKA between them on the space's data, with near-duplicate pairs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from search_space import ExpertConfig, SearchSpace, SpaceError, expert_info, folder_problem, load
from search_space.analysis import (
    NEAR_DUPLICATE,
    SimilarityMatrix,
    near_duplicates,
    pool_choices,
    pool_experts,
)
from vlmsearch.summary import describe_errors

COLUMNS = ("expert", "source", "family", "image size", "grid", "width", "tokens", "layers")


@dataclass(frozen=True)
class ExpertsOptions:
    similarity: bool = False
    images: int = 256
    threshold: float = NEAR_DUPLICATE
    as_json: bool = False
    device: str = "auto"
    run_dir: Path = Path("vlmsearch-runs")


def _shown(values: Sequence[Any], none: str) -> str:
    """A field's possible values as the YAML reads them: `16 | 64`, `all` for null."""
    def one(v: Any) -> str:
        return none if v is None else str(list(v)) if isinstance(v, tuple) else str(v)
    return " | ".join(one(v) for v in values)


def expert_rows(space: SearchSpace) -> list[dict[str, str]]:
    """One row per pool expert (a point: its experts): the geometry of its first choices from the
    cost model's expert info (`?` where it is unknown without loading the checkpoint)."""
    choices, first = pool_choices(space), pool_experts(space)
    return [_row(name, choices[name], first[name]) for name in first]


def _row(name: str, fields: dict[str, list[Any]], cfg: ExpertConfig) -> dict[str, str]:
    info = expert_info(cfg.source)
    side = cfg.image_size or (info.image_size if info else None)
    sides = [v or (info.image_size if info else None) for v in fields["image_size"]]
    grid = info.grid(cfg.layer_list[0], side) if info else None
    widths = dict.fromkeys(info.layer_width(i) for i in cfg.layer_list) if info else {}
    return {"expert": name, "source": _shown(fields["source"], "?"),
            "family": info.family if info else "?", "image size": _shown(sides, "?"),
            "grid": f"{grid[0]}x{grid[1]}" if grid else "?",
            "width": "/".join(map(str, widths)) or "?", "tokens": _shown(fields["tokens"], "all"),
            "layers": _shown(fields["layers"], "?")}


def experts_table(title: str, rows: list[dict[str, str]]) -> Table:
    table = Table(title=title, header_style="bold")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("image size", "width") else "left")
    for row in rows:
        table.add_row(*(row[c] for c in COLUMNS))
    return table


def similarity_table(title: str, matrix: SimilarityMatrix) -> Table:
    table = Table(title=title, header_style="bold")
    table.add_column("")
    for name in matrix.names:
        table.add_column(name, justify="right")
    for name, row in zip(matrix.names, matrix.values, strict=True):
        table.add_row(name, *(f"{v:.3f}" for v in row))
    return table


def similarity_json(matrix: SimilarityMatrix, threshold: float) -> dict[str, Any]:
    pairs = near_duplicates(matrix, threshold)
    return {**matrix.to_json(), "threshold": threshold,
            "near_duplicates": [{"a": p.a, "b": p.b, "cka": round(p.cka, 6)} for p in pairs]}


def _input_problem(space: SearchSpace, options: ExpertsOptions) -> str | None:
    """Why the experts of `space` cannot be listed or compared as asked, or None."""
    if not space.trains_vlm:
        return f"evaluator '{space.evaluator}' trains no VLM, so the space has no experts"
    if options.similarity and len(space.pool) < 2:
        return (f"only one expert ({next(iter(space.pool))}): similarity compares two or more; add "
                "experts to the pool")
    if not options.similarity:
        return None
    from vlmsearch.search import data_problem, device_problem

    return (data_problem(space.data) or device_problem(options.device)
            or folder_problem(options.run_dir, "--run-dir"))


def run_experts(file: Path, options: ExpertsOptions, out: Console, err: Console) -> int:
    """The command's whole run; the exit code (0 done, 1 features could not be computed, 2 bad input)."""
    try:
        space = load(file).space
    except SpaceError as exc:
        err.print(describe_errors(exc), markup=False)
        return 2
    problem = _input_problem(space, options)
    if problem:
        err.print(f"{file}: {problem}", markup=False)
        return 2
    if not options.similarity:
        rows = expert_rows(space)
        if options.as_json:
            out.file.write(json.dumps({"experts": rows}) + "\n")
        else:
            out.print(experts_table(f"experts of '{space.name}' ({len(rows)})", rows))
        return 0
    return _similarity(file, space, options, out, err)


def _similarity(file: Path, space: SearchSpace, options: ExpertsOptions, out: Console, err: Console) -> int:
    from trials import default_cache, expert_similarity

    err.print(f"running {len(space.pool)} experts on the first {options.images} training images of "
              f"'{space.name}' ...", markup=False)
    try:
        matrix = expert_similarity(space, options.images, options.device, default_cache(options.run_dir))
    except (OSError, ValueError, RuntimeError) as exc:
        err.print(f"{file}: cannot compute the experts' features: {exc}", markup=False)
        return 1
    if options.as_json:
        out.file.write(json.dumps(similarity_json(matrix, options.threshold)) + "\n")
        return 0
    out.print(similarity_table(f"linear CKA of the experts of '{space.name}' (mean-pooled features of "
                               f"{matrix.samples} training images)", matrix))
    pairs = near_duplicates(matrix, options.threshold)
    for pair in pairs:
        out.print(pair.message(), markup=False)
    if not pairs:
        out.print(f"no near duplicates (no pair reaches CKA {options.threshold:g})", markup=False)
    return 0
