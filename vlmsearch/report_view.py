"""`vlmsearch report`: a study's factor report from the results store, as Markdown or JSON (the
HTML page and its plots are in `report_html`). The analysis is `search_space.analysis`."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

    from search_space.analysis import FactorReport
    from storage import ResultsStore, StoredTrial

SKILL_PREFIX = "accuracy/"
SHOWN = {"marginal": None, "effects": None, "importance": None, "interactions": 10, "ablation": None}
TITLES = {"marginal": "Marginal means (bootstrap 95% CI)",
          "effects": "Adjusted effects (OLS on one-hot factors, the others held fixed)",
          "importance": "Importances (Optuna: PED-ANOVA, fANOVA)",
          "interactions": "Strongest interactions (partial F test over the main effects)",
          "ablation": "Ablation: the best design, one factor swapped at a time",
          "similarity": "Expert similarity (linear CKA of the pool's mean-pooled features)"}


def search_trials(found: Sequence[StoredTrial]) -> list[StoredTrial]:
    """The trials a report compares: complete, run by the search itself (not reused results)."""
    return [t for t in found if t.status == "complete" and t.reused_from is None]


def targets(objectives: Sequence[Any], found: Sequence[StoredTrial]) -> list[tuple[str, str]]:
    """The study's objectives, then every `accuracy/<skill>` the trials report (maximized)."""
    chosen = [(o.metric, o.direction) for o in objectives]
    skills = sorted({m for t in found for m in t.metrics if m.startswith(SKILL_PREFIX)})
    return chosen + [(m, "maximize") for m in skills if m not in dict(chosen)]


def study_report(store: ResultsStore, study: str, validation: pd.DataFrame | None = None,
                 seed: int = 0) -> FactorReport:
    """The factor report of `study` (raises UnknownStudy, StorageError, TooFewTrials)."""
    import pandas as pd

    from search_space.analysis import design_factors, factor_report
    from storage import StorageError

    found = search_trials(store.trials(study, status="complete"))
    try:
        space = store.space(study)
        objectives, pool = list(space.objectives), list(space.pool) or None
    except StorageError:  # no stored space: every metric of the trials, no objectives
        objectives, pool = [], None
    wanted = targets(objectives, found) or [("accuracy", "maximize")]
    trials = pd.DataFrame([{"number": t.number, "config_hash": t.config_hash,
                            **{m: t.metrics.get(m, math.nan) for m, _ in wanted}} for t in found],
                          columns=["number", "config_hash", *(m for m, _ in wanted)])
    factors = design_factors([t.config for t in found], pool=pool)
    if validation is None:
        validation = validation_frame(store, study, [m for m, _ in wanted])
    return factor_report(trials, factors, wanted, validation=validation, seed=seed)


def validation_frame(store: ResultsStore, study: str, metrics: Sequence[str]) -> pd.DataFrame:
    """The study's complete validation trials (`vlmsearch validate`): design_hash, seed, steps,
    metrics; of each design only its largest validated budget."""
    import pandas as pd

    rows = [{"design_hash": v.design_hash, "seed": v.seed, "steps": v.steps,
             **{m: v.metrics.get(m, math.nan) for m in metrics}}
            for v in store.validation_trials(study, status="complete")]
    table = pd.DataFrame(rows, columns=["design_hash", "seed", "steps", *metrics])
    largest = table.groupby("design_hash")["steps"].transform("max")
    return table[table["steps"] == largest].reset_index(drop=True)


def cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(table: pd.DataFrame, limit: int | None = None) -> str:
    """A GitHub Markdown table (numbers to 4 significant digits)."""
    if table.empty:
        return "_(none)_"
    shown = table if limit is None else table.head(limit)
    lines = ["| " + " | ".join(str(c) for c in shown.columns) + " |",
             "|" + "|".join("---" for _ in shown.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines)


def interactions_shown(report: FactorReport) -> pd.DataFrame:
    """Per metric, the strongest interactions first (the table is sorted by metric, then p)."""
    table = report.interactions
    if table.empty:
        return table
    return table.groupby("metric", sort=False).head(SHOWN["interactions"])


def sections(report: FactorReport) -> dict[str, pd.DataFrame]:
    """The tables a page shows, in order."""
    return {"marginal": report.marginal, "effects": report.effects, "importance": report.importance,
            "interactions": interactions_shown(report), "ablation": report.ablation,
            "similarity": report.similarity}


def best_line(report: FactorReport) -> str:
    if report.best.empty:
        return "no best design (no objective measured)"
    row = report.best.iloc[0]
    levels = ", ".join(f"{f}={row[f]}" for f in report.factors)
    values = ", ".join(f"{m}={cell(float(row[m]))}" for m, _ in report.targets)
    return f"trial {int(row['number'])} ({row['config_hash']}): {levels}; {values}"


def to_markdown(report: FactorReport, study: str) -> str:
    metrics = ", ".join(f"{m} ({'max' if d == 'maximize' else 'min'})" for m, d in report.targets)
    parts = [f"# Factor report: study '{study}'", "",
             f"{len(report.design)} complete search trials; factors compared: {', '.join(report.factors)}; "
             f"metrics: {metrics}.", "", f"Best design by {report.targets[0][0]}: {best_line(report)}"]
    for name, table in sections(report).items():
        parts += ["", f"## {TITLES[name]}", "", markdown_table(table)]
    if report.notes:
        parts += ["", "## Notes", "", *(f"- {n}" for n in report.notes)]
    return "\n".join(parts) + "\n"


def to_json(report: FactorReport, study: str) -> str:
    return json.dumps({"study": study, "trials": len(report.design), **report.to_json()})


def _html(report: FactorReport, study: str) -> str:
    from vlmsearch.report_html import to_html

    return to_html(report, study)


RENDERERS = {"md": to_markdown, "json": to_json, "html": _html}


def attach_similarity(report: FactorReport, space: Any, images: int, run_dir: Path,
                      warn: Callable[[str], None]) -> None:
    """The pool's CKA matrix as the report's `similarity` table (`vlmsearch experts --similarity`,
    features cached under `run_dir`); a space without two VLM experts has none; a failure is a
    note, never a failed report."""
    from search_space.analysis import near_duplicates

    if space is None or not space.trains_vlm or len(space.pool) < 2:
        return
    from trials import default_cache, expert_similarity

    try:
        matrix = expert_similarity(space, images, "auto", default_cache(run_dir))
    except (ValueError, OSError, RuntimeError) as exc:
        warn(f"note: no expert similarity in the report ({str(exc).splitlines()[0][:300]})")
        return
    report.similarity = matrix.pairs()
    report.notes += [f"similarity over the first {matrix.samples} training images"] + \
        [d.message() for d in near_duplicates(matrix)]


def report_command(study: str, fmt: str, out_file: Path | None, storage: str, tracking: str | None,
                   err: Console, similarity: int = 0, run_dir: Path = Path("vlmsearch-runs")) -> int:
    """`vlmsearch report`: the exit code (2: unknown study, unreadable store, too few trials).
    `similarity`: that many training images for the experts' CKA table (0: none)."""
    from dashboard import DEFAULT_TRACKING
    from search_space.analysis import TooFewTrials
    from storage import StorageError, UnknownStudy
    from vlmsearch.api import read_store
    from vlmsearch.report_html import publish

    try:
        store = read_store(storage)
        if store is None:
            raise UnknownStudy(study, [], storage)
        try:
            with store.guard():
                report = study_report(store, study)
                tracking = tracking or _yaml_tracking(store, study) or DEFAULT_TRACKING
                space = stored_space(store, study)
        finally:
            store.close()
    except StorageError as exc:
        err.print(str(exc), markup=False)
        return 2
    except TooFewTrials as exc:
        err.print(f"study '{study}': {exc}", markup=False)
        return 2
    if similarity:
        attach_similarity(report, space, similarity, run_dir, lambda m: err.print(m, markup=False))
    text = RENDERERS[fmt](report, study)
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text, encoding="utf-8")
        err.print(f"wrote {out_file}", markup=False)
    run_id = publish(report, study, tracking, lambda m: err.print(m, markup=False))
    if run_id is not None:
        err.print(f"logged report/report.html on MLflow run {run_id}", markup=False)
    return 0


def stored_space(store: ResultsStore, study: str) -> Any:
    """The study's space, or None when the store cannot give it back."""
    from storage import StorageError

    try:
        return store.space(study)
    except StorageError:
        return None


def _yaml_tracking(store: ResultsStore, study: str) -> str | None:
    space = stored_space(store, study)
    return space.tracking if space is not None else None
