"""The `vlmsearch` command line. Heavy libraries are imported inside the commands that need them."""

from __future__ import annotations

import enum
import json
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console

from common import redact_secrets, redact_url
from dashboard import DEFAULT_TRACKING
from search_space import BACKENDS
from vlmsearch.search import DEFAULT_STORAGE
from vlmsearch.summary import describe_errors, summarize

PROFILE_HELP = "plan for this device: h100, h200, a100-80g, a100-40g, l40s, cpu (over the YAML's)"
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Declarative AutoML for multi-encoder vision-language models.")
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160)


@app.command()
def check(
    file: Path = typer.Argument(..., help="a space or point YAML file"),
    as_json: bool = typer.Option(False, "--json", help="print every analytic metric as one JSON object"),
    device_profile: str | None = typer.Option(None, "--device-profile", help=PROFILE_HELP),
) -> None:
    """Validate a space or a point and print its summary (exit 2 with every error if invalid)."""
    from search_space import SpaceError, load

    try:
        loaded = load(file, device_profile)
    except SpaceError as exc:
        err.print(describe_errors(exc), markup=False)
        raise typer.Exit(2) from None
    if as_json:
        from vlmsearch.resources_view import check_json

        sys.stdout.write(json.dumps(check_json(loaded)) + "\n")
        return
    out.print(summarize(loaded), markup=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the YAML (spaces and points), for editors."""
    from search_space import SearchSpace

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
    device_profile: str | None = typer.Option(None, "--device-profile", help=PROFILE_HELP),
) -> None:
    """Train and evaluate one design point (exit 0 done, 1 the trial failed, 2 bad input)."""
    from search_space import SpaceError, load_point

    try:
        point, loaded = load_point(file, device_profile)
    except SpaceError as exc:
        err.print(describe_errors(exc), markup=False)
        raise typer.Exit(2) from None
    from search_space import folder_problem
    from vlmsearch.search import data_problem, device_problem
    from vlmsearch.trial_view import run_with_progress

    problem = data_problem(point.data, point.trains_vlm) or device_problem(device, point.trains_vlm) \
        or folder_problem(run_dir, "--run-dir")
    if problem:
        err.print(f"{file}: {problem}", markup=False)
        raise typer.Exit(2)
    result = run_with_progress(point, steps, device, run_dir, err, loaded.space.search.resources)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    else:
        from vlmsearch.trial_view import result_table

        out.print(result_table(result))
    raise typer.Exit(0 if result.status == "complete" else 1)


@app.command()
def data(
    file: Path = typer.Argument(..., help="a LLaVA conversation JSON file"),
    image_folder: Path = typer.Option(..., "--image-folder", help="where the records' images are"),
    lm: str = typer.Option("tiny-llama", "--lm", help="whose tokenizer counts the tokens: a preset, an HF "
                                                       "id or a local directory"),
    as_json: bool = typer.Option(False, "--json", help="print the report as one JSON object"),
) -> None:
    """Report on a LLaVA-format data set: records, turns, text-only records, missing or unreadable
    images, token lengths (exit 2 with every problem named for a malformed file)."""
    from vlmsearch.data_view import data_report

    try:
        report = data_report(file, image_folder, lm)
    except ValueError as exc:  # DataError: the file; or a tokenizer that cannot be loaded
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps(report.to_json()) + "\n")
        return
    for line in report.lines():
        out.print(line, markup=False)


Backend = enum.Enum("Backend", {name: name for name in BACKENDS.names()}, type=str)  # --backend

@app.command()
def run(
    file: Path = typer.Argument(..., help="a search space YAML file"),
    trials: int | None = typer.Option(None, "--trials", min=1, help="finished trials to reach"),
    backend: Backend | None = typer.Option(None, "--backend", help=" or ".join(BACKENDS.names())),
    concurrency: int | None = typer.Option(None, "--concurrency", min=1, help="trials at once"),
    study: str | None = typer.Option(None, "--study", help="study name (default: the space's name)"),
    resume: bool = typer.Option(False, "--resume", help="continue an existing study"),
    storage: str | None = typer.Option(None, "--storage", help="SQL URL of the study and results"),
    tracking: str | None = typer.Option(None, "--tracking", help="MLflow tracking URI (default "
                                            "sqlite:///vlmsearch-runs/mlflow.db; `none`: off)"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="join this Ray cluster"),
    run_dir: Path = typer.Option(Path("vlmsearch-runs"), "--run-dir", help="cache and logs"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    device_profile: str | None = typer.Option(None, "--device-profile", help=PROFILE_HELP),
) -> None:
    """Run a search: live progress, then the Pareto table (exit 130 when interrupted)."""
    from search_space import SpaceError, load

    try:
        loaded = load(file, device_profile)
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
    evaluators = "evaluators"
    backends = "backends"
    samplers = "samplers"
    early_stopping = "early_stopping"


@app.command("list")
def list_(what: Listing = typer.Argument(..., help="which registry")) -> None:
    """List a registry's entries, one per line, with a short description."""
    from vlmsearch.summary import registry_lines

    for line in registry_lines(what.value):
        out.print(line, markup=False)


STORAGE_HELP = "SQL URL of the results store (default sqlite:///vlmsearch-runs/results.db)"


def _open_store(url: str):  # -> ResultsStore | None
    """The store on `url` to read (None: not there; nothing is created). A store that cannot be
    opened exits 2 with one line naming it (never its password)."""
    from storage import StorageError
    from vlmsearch.api import read_store

    try:
        return read_store(url)
    except StorageError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None


@app.command()
def studies(storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help=STORAGE_HELP)) -> None:
    """List the studies in the results store, with their trial counts per status."""
    from storage import StorageError
    from vlmsearch.results_view import studies_table

    store = _open_store(storage)
    try:
        found = []
        if store is not None:
            with store.guard():
                found = store.studies()
    except StorageError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    if not found:
        out.print(f"no studies in {redact_url(storage)}", markup=False)
        return
    out.print(studies_table(found, redact_url(storage)))


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def results(
    study: str = typer.Option(..., "--study", help="the study's name (see `vlmsearch studies`)"),
    pareto: bool = typer.Option(False, "--pareto", help="only the Pareto front (feasible, non-dominated)"),
    format_: Format = typer.Option(Format.table, "--format", help="table, csv or json"),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help=STORAGE_HELP),
    validation: bool = typer.Option(False, "--validation", help="the validation trials instead "
                                    "(`vlmsearch validate`)"),
) -> None:
    """The trials of a study, or only its Pareto front (exit 2 for an unknown study)."""
    from storage import StorageError, UnknownStudy, to_json, write_csv

    store = _open_store(storage)
    try:
        if store is None:
            raise UnknownStudy(study, [], storage)
        if validation:
            from vlmsearch.validate_view import show_validation_rows

            with store.guard():
                show_validation_rows(store, study, format_.value, redact_url(storage), out)
            return
        with store.guard():
            total = store.summary(study).total if pareto and format_ is Format.table else 0
            front = store.pareto_front(study) if pareto else None
            found = front.trials if front is not None else store.trials(study)
            objectives = _objectives(store, study) if format_ is Format.table else []
    except StorageError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    if format_ is Format.json:
        sys.stdout.write(to_json(found) + "\n")
    elif format_ is Format.csv:
        write_csv(found, sys.stdout)
    else:
        from vlmsearch.results_view import results_table

        where = redact_url(storage)
        title = (f"Pareto front of '{study}': {len(found)} of {total} trials (hypervolume "
                 f"{front.hypervolume:.4g}) in {where}" if front is not None
                 else f"study '{study}': {len(found)} trials in {where}")
        out.print(results_table(title, found, objectives))


def _objectives(store, study: str) -> list:
    """The study's objectives, or none when its stored space cannot be read (the table still shows)."""
    from storage import StorageError

    try:
        return list(store.space(study).objectives)
    except StorageError:
        return []


TRACKING_HELP = "MLflow tracking URI (default sqlite:///vlmsearch-runs/mlflow.db)"


@app.command()
def sync(
    study: str = typer.Option(..., "--study", help="the study's name (see `vlmsearch studies`)"),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help=STORAGE_HELP),
    tracking: str = typer.Option(DEFAULT_TRACKING, "--tracking", help=TRACKING_HELP),
) -> None:
    """Log to MLflow what a search could not (tracking was down): replayed from the results store,
    without duplicate runs (exit 2 for an unknown study, 1 when MLflow cannot be reached)."""
    from dashboard import TrackingError
    from storage import StorageError, UnknownStudy
    from vlmsearch.sync import sync_study

    store = _open_store(storage)
    try:
        if store is None:
            raise UnknownStudy(study, [], storage)
        with store.guard():
            report = sync_study(store, study, tracking)
    except (StorageError, TrackingError) as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    except Exception as exc:  # MLflow unreachable or refusing: nothing in the store changed
        reason = redact_secrets(f"{type(exc).__name__}: {exc}", tracking).splitlines()[0][:300]
        err.print(f"MLflow at {redact_url(tracking)} failed ({reason}); the results store is unchanged: "
                  "run `vlmsearch sync` again when MLflow answers", markup=False)
        raise typer.Exit(1) from None
    finally:
        if store is not None:
            store.close()
    out.print(report.describe(), markup=False)


@app.command()
def dashboard(
    tracking: str = typer.Option(DEFAULT_TRACKING, "--tracking", help=TRACKING_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on (loopback by default)"),
    port: int = typer.Option(5000, "--port", min=1, max=65535, help="port to listen on"),
    study: str | None = typer.Option(None, "--study", help="print the links of this study only"),
    auth: bool = typer.Option(False, "--auth", help="MLflow's basic-auth app: no anonymous requests"),
    user: str = typer.Option("admin", "--user", help="the admin user of --auth"),
    hosts: str | None = typer.Option(None, "--allowed-hosts", help="more names (comma-separated) other "
                                     "machines use for this one; its own names are allowed already"),
) -> None:
    """Start the MLflow UI on the tracking store and print the links to each study's Pareto front
    (runs until Ctrl-C)."""
    from dashboard import LOOPBACK, DashboardError, parse_hosts, serve

    try:
        extra = parse_hosts(hosts)
    except ValueError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    if host not in LOOPBACK and not auth:
        err.print(f"note: listening on {host} without --auth: anyone who can reach this machine can "
                  "read (and change) the runs", markup=False)
    try:
        code = serve(tracking, host, port, study, auth, user, lambda m: err.print(m, markup=False),
                     lambda m: out.print(m, markup=False, soft_wrap=True), extra)
    except DashboardError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


db = typer.Typer(no_args_is_help=True, help="The results store's database: schema migrations.")
app.add_typer(db, name="db")


@db.command("upgrade")
def db_upgrade(storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help=STORAGE_HELP)) -> None:
    """Migrate the results store to the newest schema (a new store is created)."""
    from storage import StorageError, upgrade_store

    try:
        done = upgrade_store(storage)
    except StorageError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    where = redact_url(storage)
    if done.changed:
        out.print(f"{where}: schema upgraded from {done.before or 'empty'} to {done.after} (newest)",
                  markup=False)
    else:
        out.print(f"{where}: schema already at {done.after} (newest)", markup=False)


from vlmsearch import cli_analysis  # noqa: E402, F401  (registers experts, report, validate)


def main() -> None:
    """Console-script entry point. Usage errors and invalid input exit 2, with no traceback."""
    # SQLAlchemy's pool logs "Error closing cursor" with a traceback when Ctrl-C cuts a query; the
    # connection is thrown away either way, so it is noise to a user (the search says what to do)
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    app()
