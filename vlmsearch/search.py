"""Wiring a search: flags over the YAML, the sinks, the backend, exit codes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from dashboard import DEFAULT_TRACKING
from search_space import BACKENDS, Loaded

DEFAULT_STORAGE = "sqlite:///vlmsearch-runs/results.db"


@dataclass(frozen=True)
class SearchOptions:
    """Command-line flags; None means "as the YAML says"."""

    trials: int | None = None
    backend: str | None = None
    concurrency: int | None = None
    study: str | None = None
    resume: bool = False
    storage: str | None = None
    tracking: str | None = None
    ray_address: str | None = None
    run_dir: Path = Path("vlmsearch-runs")
    device: str = "auto"
    steps: int | None = None


def make_sqlite_folder(url: str) -> None:
    """Create the directory of a relative or absolute SQLite file (once the input is known good)."""
    from common import sqlite_path

    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def make_spec(loaded: Loaded, options: SearchOptions):  # -> SearchSpec
    """The search to run; its YAML as stored and logged has no password (URLs show `***`)."""
    from common import redact_passwords
    from search_space import study_name_problem
    from trials import SearchError, SearchSpec

    space = loaded.space
    if options.study is not None and study_name_problem(options.study):
        raise SearchError(f"--study: {study_name_problem(options.study)}; e.g. --study {space.name}")
    if not space.objectives:
        raise SearchError("a search needs objectives, e.g. objectives: [{metric: accuracy, "
                          "direction: maximize}]")
    search = space.search
    backend = options.backend or search.backend
    if options.ray_address and not BACKENDS.get(backend).joins_cluster:
        raise SearchError(f"--ray-address joins a Ray cluster, but this search runs on backend "
                          f"'{backend}'; add --backend ray (or search.backend: ray in the YAML), or "
                          "leave --ray-address out")
    if backend != search.backend or options.trials or options.concurrency:
        space = space.model_copy(update={"search": search.model_copy(update={
            "backend": backend, "trials": options.trials or search.trials,
            "concurrency": options.concurrency or search.concurrency})})
    return SearchSpec(study=options.study or space.name, space=space,
                      space_yaml=redact_passwords(Path(loaded.source).read_text(encoding="utf-8")),
                      trials=space.search.trials, concurrency=space.search.concurrency,
                      storage=options.storage or space.storage or DEFAULT_STORAGE,
                      run_dir=options.run_dir, resume=options.resume, device=options.device,
                      steps=options.steps, extra={
                          "ray_address": options.ray_address,
                          # what the stored YAML's relative `source:` folders are read against
                          "space_dir": str(Path(loaded.source).parent.resolve())})


def run_search(loaded: Loaded, options: SearchOptions, out: Console, err: Console) -> int:
    """Run the search; returns the exit code (0 done, 2 bad input, 130 interrupted)."""
    from search_space import Sinks
    from trials import JsonLinesSink, SearchError, backend_class
    from vlmsearch.run_view import ProgressView, pareto_table

    storage = options.storage or loaded.space.storage
    tracking = options.tracking or loaded.space.tracking or DEFAULT_TRACKING
    tracker = tracking_sink(tracking, err, storage if storage not in (None, DEFAULT_STORAGE) else None)
    if tracker is False:
        return 2
    try:
        spec = make_spec(loaded, options)
    except SearchError as exc:
        err.print(f"{loaded.source}: {exc}", markup=False)
        return 2
    # trials run here, unless they run on the nodes of a cluster this search joins
    local = not (options.ray_address and BACKENDS.get(spec.space.search.backend).joins_cluster)
    problem = data_problem(loaded.space.data, loaded.space.trains_vlm) or \
        device_problem(options.device, loaded.space.trains_vlm, local) or \
        write_problem(spec.run_dir, spec.storage, tracking)
    if problem:  # before the study exists: bad data or device leaves nothing behind
        err.print(f"{loaded.source}: {problem}", markup=False)
        return 2
    store = open_results_store(spec.storage, err)
    if store is None:
        return 2
    view = ProgressView(spec.space, spec.trials, err)
    ending = [s for s in (store, tracker) if s is not None]  # told how the search ended
    sinks = Sinks([JsonLinesSink(spec.run_dir / spec.study / "events.jsonl"), *ending, view])
    try:
        backend = backend_class(spec.space.search.backend)(spec, sinks, lambda m: err.print(m, markup=False))
        backend.prepare()
        with view:
            state = backend.run()
        Sinks(ending).study_finished(spec.study, "finished")
    except SearchError as exc:
        err.print(f"{loaded.source}: {exc}", markup=False)
        return 2
    except KeyboardInterrupt:
        Sinks(ending).study_finished(spec.study, "interrupted")
        err.print(f"interrupted: running trials were marked and queued again; `vlmsearch run "
                  f"{loaded.source} --resume` continues study '{spec.study}'", markup=False)
        return 130
    finally:
        store.close()
    results = sorted(state.results.values(), key=lambda r: r.number or 0)
    out.print(pareto_table(spec.space, results, state.front.hypervolume))
    return 0


def device_problem(device: str, trains_vlm: bool = True, local: bool = True) -> str | None:
    """Why trials cannot train on `device` (auto, cpu, cuda, cuda:N), or None. `local`: they run
    on this machine, so its GPU must be there (a cluster's may not be the driver's)."""
    if not trains_vlm or device == "auto":
        return None
    import torch

    usage = "use --device auto, cpu, cuda or cuda:N"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return f"unknown device '{device}'; {usage}"
    if parsed.type not in ("cpu", "cuda"):
        return f"device '{device}' is not supported; {usage}"
    count = torch.cuda.device_count() if local and parsed.type == "cuda" else None
    if count == 0:
        return (f"--device {device}, but torch {torch.__version__} sees no CUDA GPU here; use --device "
                "auto or cpu")
    if count is not None and (parsed.index or 0) >= count:
        return f"--device {device}, but this machine has {count} CUDA GPU(s); use cuda:0 .. cuda:{count - 1}"
    return None


def write_problem(run_dir: Path, storage: str, tracking: str) -> str | None:
    """Why the run folder or a SQLite file (the store's, MLflow's) cannot be written where it is
    named, or None: checked before anything is created."""
    from common import sqlite_path
    from search_space import file_problem, folder_problem

    problems = (folder_problem(run_dir, "--run-dir"),
                *(file_problem(path, f"the SQLite file of {flag}") for flag, url in
                  (("--storage", storage), ("--tracking", tracking)) if (path := sqlite_path(url))))
    return next((p for p in problems if p), None)


def data_problem(data: Any, trains_vlm: bool = True) -> str | None:
    """Why the data set every trial reads cannot be used (files, images), or None."""
    if not trains_vlm:
        return None
    from trials import check_data, check_evalsets

    problems = []
    for check in (lambda: check_data(data), lambda: check_evalsets(data.eval, data.image_size)):
        try:
            check()
        except ValueError as exc:
            problems.append(str(exc))
    return "; ".join(problems) or None


def tracking_sink(uri: str, err: Console, storage: str | None = None):  # -> MlflowSink | None | False
    """The MLflow sink for `uri` (`none` turns tracking off); False, with the reason, for a URI
    MLflow cannot use. Nothing is contacted yet: an unreachable server must not stop a search."""
    from dashboard import TRACKING_OFF, MlflowSink, TrackingError, check_uri

    if uri.strip().lower() in TRACKING_OFF:
        return None
    try:
        check_uri(uri)
    except TrackingError as exc:
        err.print(str(exc), markup=False)
        return False
    return MlflowSink(uri, lambda message: err.print(message, markup=False), storage=storage)


def open_results_store(url: str, err: Console):  # -> storage.ResultsStore | None
    """The SQL results store beside the Optuna study (same database, `vs_` tables); None, with
    the reason printed (no password), when it cannot be opened."""
    from storage import ResultsStore, StorageError

    make_sqlite_folder(url)
    try:
        return ResultsStore(url)
    except StorageError as exc:
        err.print(str(exc), markup=False)
        return None
