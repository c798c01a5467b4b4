"""The `vlmsearch` command line. Heavy libraries are imported inside the commands that need them."""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from vlmsearch.summary import describe_errors, summarize

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Declarative AutoML for multi-encoder vision-language models.")
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160)


@app.command()
def check(file: Path = typer.Argument(..., help="a space or point YAML file")) -> None:
    """Validate a space or a point and print its summary (exit 2 with every error if invalid)."""
    from search_space import SpaceError, load

    try:
        loaded = load(file)
    except SpaceError as exc:
        err.print(describe_errors(exc), markup=False)
        raise typer.Exit(2) from None
    out.print(summarize(loaded), markup=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the YAML (spaces and points), for editors."""
    from search_space.space import SearchSpace

    document = SearchSpace.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "vlmsearch search space or point"
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


@app.command()
def trial(
    file: Path = typer.Argument(..., help="a point YAML file (one design)"),
    steps: int | None = typer.Option(None, "--steps", min=1, help="training steps (overrides train.steps)"),
    as_json: bool = typer.Option(False, "--json", help="print the trial JSON as the last line"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    run_dir: Path = typer.Option(Path("vlmsearch-runs"), "--run-dir",
                                 help="where the feature cache lives"),
) -> None:
    """Train and evaluate one design point (exit 0 done, 1 the trial failed, 2 bad input)."""
    from search_space import SpaceError, load_point

    try:
        point, _ = load_point(file)
    except SpaceError as exc:
        err.print(describe_errors(exc), markup=False)
        raise typer.Exit(2) from None
    from vlmsearch.trial_view import run_with_progress

    result = run_with_progress(point, steps, device, run_dir, err)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    else:
        from vlmsearch.trial_view import result_table

        out.print(result_table(result))
    raise typer.Exit(0 if result.status == "complete" else 1)


class Backend(str, enum.Enum):
    optuna = "optuna"
    ray = "ray"


@app.command()
def run(
    file: Path = typer.Argument(..., help="a search space YAML file"),
    trials: int | None = typer.Option(None, "--trials", min=1, help="finished trials to reach"),
    backend: Backend | None = typer.Option(None, "--backend", help="optuna or ray"),
    concurrency: int | None = typer.Option(None, "--concurrency", min=1, help="trials at once"),
    study: str | None = typer.Option(None, "--study", help="study name (default: the space's name)"),
    resume: bool = typer.Option(False, "--resume", help="continue an existing study"),
    storage: str | None = typer.Option(None, "--storage", help="SQL URL of the study and results"),
    tracking: str | None = typer.Option(None, "--tracking", help="MLflow tracking URI"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="join this Ray cluster"),
    run_dir: Path = typer.Option(Path("vlmsearch-runs"), "--run-dir", help="cache and logs"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
) -> None:
    """Run a search: live progress, then the Pareto table (exit 130 when interrupted)."""
    from search_space import SpaceError, load

    try:
        loaded = load(file)
    except SpaceError as exc:
        err.print(describe_errors(exc), markup=False)
        raise typer.Exit(2) from None
    from vlmsearch.search import SearchOptions, run_search

    options = SearchOptions(trials=trials, backend=backend.value if backend else None,
                            concurrency=concurrency, study=study, resume=resume, storage=storage,
                            tracking=tracking, ray_address=ray_address, run_dir=run_dir, device=device)
    raise typer.Exit(run_search(loaded, options, out, err))


class Listing(str, enum.Enum):
    experts = "experts"
    fusions = "fusions"
    positions = "positions"
    projectors = "projectors"
    presets = "presets"


@app.command("list")
def list_(what: Listing = typer.Argument(..., help="which registry")) -> None:
    """List a registry's entries, one per line, with a short description."""
    from vlmsearch.summary import registry_lines

    for line in registry_lines(what.value):
        out.print(line, markup=False)


def main() -> None:
    """Console-script entry point. Usage errors and invalid input exit 2, with no traceback."""
    app()
