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
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


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
