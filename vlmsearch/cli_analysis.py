"""The analysis commands of `vlmsearch`: `experts` (the pool, and with --similarity linear CKA),
`report` (the factor analysis of a study), `validate` (its front re-trained at a larger budget).
They register on the one `app` of vlmsearch.cli."""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from dashboard import DEFAULT_TRACKING
from vlmsearch.cli import STORAGE_HELP, TRACKING_HELP, app, err, out
from vlmsearch.search import DEFAULT_STORAGE


class ExpertsFormat(str, enum.Enum):
    table = "table"
    json = "json"


@app.command()
def experts(
    file: Path = typer.Argument(..., help="a space (its pool) or a point (its experts) YAML file"),
    similarity: bool = typer.Option(False, "--similarity", help="linear CKA between the experts' features "
                                    "on the space's training images; flags near duplicates"),
    images: int = typer.Option(256, "--images", min=1, help="training images each expert runs on"),
    threshold: float = typer.Option(0.95, "--threshold", min=0.0, max=1.0,
                                    help="CKA at or above which a pair is flagged as near duplicates"),
    format_: ExpertsFormat = typer.Option(ExpertsFormat.table, "--format", help="table or json"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    run_dir: Path = typer.Option(Path("vlmsearch-runs"), "--run-dir", help="where the feature cache lives"),
) -> None:
    """The pool's experts (source, family, geometry), or with --similarity the linear CKA between
    them (exit 2 for bad input, 1 when an expert cannot be run)."""
    from vlmsearch.experts_view import ExpertsOptions, run_experts

    options = ExpertsOptions(similarity, images, threshold, format_ is ExpertsFormat.json, device, run_dir)
    raise typer.Exit(run_experts(file, options, out, err))


class ValidateFormat(str, enum.Enum):
    table = "table"
    json = "json"


ReportFormat = enum.Enum("ReportFormat", {name: name for name in ("md", "html", "json")}, type=str)


@app.command()
def report(
    study: str = typer.Option(..., "--study", help="the study's name (see `vlmsearch studies`)"),
    format_: ReportFormat = typer.Option("md", "--format", help="md, html or json"),
    out_file: Path | None = typer.Option(None, "--out", help="write the report here (default: stdout)"),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help=STORAGE_HELP),
    tracking: str | None = typer.Option(None, "--tracking", help="MLflow tracking URI: the study's parent "
                                        "run gets report/ (default: the YAML's tracking, else "
                                        f"{DEFAULT_TRACKING}; `none`: off)"),
    similarity: int = typer.Option(128, "--similarity-images", min=0, help="training images for the "
                                   "experts' linear CKA table (0: leave it out)"),
    run_dir: Path = typer.Option(Path("vlmsearch-runs"), "--run-dir", help="where the feature cache lives"),
) -> None:
    """The factor analysis of a study: marginal means, adjusted effects, importances, interactions,
    the ablation table (exit 2 for an unknown study or too few complete trials)."""
    from vlmsearch.report_view import report_command

    raise typer.Exit(report_command(study, format_.value, out_file, storage, tracking, err, similarity,
                                    run_dir))


@app.command()
def validate(
    study: str = typer.Option(..., "--study", help="the study's name (see `vlmsearch studies`)"),
    top: int = typer.Option(3, "--top", min=0, help="the top K designs by the first objective, "
                            "besides the Pareto front"),
    steps: int | None = typer.Option(None, "--steps", min=1, help="validation budget in steps"),
    budget_factor: float | None = typer.Option(None, "--budget-factor", help="validation budget as a "
                                               "multiple of the design's train.steps (default 4)"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="seeds per design (train.seed + 0 .. S-1)"),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help=STORAGE_HELP),
    tracking: str = typer.Option(DEFAULT_TRACKING, "--tracking", help=TRACKING_HELP + "; `none`: off"),
    format_: ValidateFormat = typer.Option(ValidateFormat.table, "--format", help="table or json"),
    concurrency: int | None = typer.Option(None, "--concurrency", min=1, help="trials at once "
                                           "(default: the space's search.concurrency)"),
    run_dir: Path = typer.Option(Path("vlmsearch-runs"), "--run-dir", help="where the feature cache lives"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
) -> None:
    """Re-train the Pareto front and the top K at a larger budget with several seeds: mean ± 95% CI,
    Kendall tau, Spearman rho, top-k agreement (exit 0 done, 1 a validation trial failed, 2 bad
    input, 130 interrupted: the same command continues)."""
    from vlmsearch.validate import ValidateOptions, run_validation

    options = ValidateOptions(study=study, top=top, steps=steps, budget_factor=budget_factor, seeds=seeds,
                              storage=storage, tracking=tracking, concurrency=concurrency, run_dir=run_dir,
                              device=device)
    raise typer.Exit(run_validation(options, format_.value, out, err))
