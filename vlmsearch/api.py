"""The Python API (Optuna's style): run a search or one trial, and read a study's trials and
its Pareto front as pandas DataFrames. The same paths as the command line run underneath."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from vlmsearch.search import DEFAULT_STORAGE

if TYPE_CHECKING:
    import pandas as pd

    from search_space import SearchSpace, TrialResult
    from search_space.analysis import FactorReport
    from storage import ResultsStore, StoredTrial

TRIAL_COLUMNS = ("study", "number", "status", "steps", "pareto_rank", "config_hash", "failure_reason",
                 "reused_from", "host", "duration_s")


class SearchFailed(RuntimeError):
    """A search that could not start or run; the message is what `vlmsearch run` prints."""


def run(space: str | Path, *, trials: int | None = None, backend: str | None = None,
        concurrency: int | None = None, study: str | None = None, resume: bool = False,
        storage: str | None = None, tracking: str | None = None, ray_address: str | None = None,
        run_dir: str | Path = "vlmsearch-runs", device: str = "auto", steps: int | None = None,
        device_profile: str | None = None, progress: bool = True) -> pd.DataFrame:
    """`vlmsearch run SPACE.yaml` with its flags as keywords; returns the study's trials
    (`results`). Raises SpaceError for a bad YAML, SearchFailed (with the CLI's message) for
    anything else refused, KeyboardInterrupt when interrupted (`resume=True` continues)."""
    from search_space import load
    from vlmsearch.search import SearchOptions, run_search

    loaded = load(space, device_profile)
    options = SearchOptions(trials=trials, backend=backend, concurrency=concurrency, study=study,
                            resume=resume, storage=storage, tracking=tracking, ray_address=ray_address,
                            run_dir=Path(run_dir), device=device, steps=steps)
    shown = {"stderr": True} if progress else {"file": io.StringIO()}
    err = Console(record=True, soft_wrap=True, **shown)  # a message stays one line
    code = run_search(loaded, options, Console(file=io.StringIO()), err)
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        lines = [line for line in err.export_text().splitlines() if line.strip()]
        raise SearchFailed(lines[-1] if lines else f"the search ended with exit code {code}")
    return results(options.study or loaded.space.name,
                   storage=options.storage or loaded.space.storage or DEFAULT_STORAGE)


def trial(point: str | Path, *, steps: int | None = None, device: str = "auto",
          run_dir: str | Path = "vlmsearch-runs", device_profile: str | None = None) -> TrialResult:
    """`vlmsearch trial POINT.yaml`: train and evaluate one design; its result (`.metrics`,
    `.status`, `.to_json()`), failed or not."""
    from search_space import load_point
    from trials import TrialOptions, default_cache, run_trial

    design, loaded = load_point(point, device_profile)
    cache = default_cache(Path(run_dir)) if design.trains_vlm else None
    result = run_trial(design, TrialOptions(steps=steps, device=device, cache=cache,
                                            resources=loaded.space.search.resources))
    result.study, result.number = design.name, 0
    return result


def similarity(space: str | Path | SearchSpace, *, images: int = 256, device: str = "auto",
               run_dir: str | Path = "vlmsearch-runs") -> pd.DataFrame:
    """`vlmsearch experts SPACE.yaml --similarity`: linear CKA between the pool's experts (a point:
    its experts) on the first `images` training images, as a DataFrame (rows and columns the
    experts); features cached under `run_dir`. Raises SpaceError for a bad YAML."""
    from search_space import SearchSpace, load
    from trials import default_cache, expert_similarity

    loaded = space if isinstance(space, SearchSpace) else load(space).space
    return expert_similarity(loaded, images, device, default_cache(Path(run_dir))).frame()
def validate(study: str, *, top: int = 3, steps: int | None = None, budget_factor: float | None = None,
             seeds: int = 3, storage: str = DEFAULT_STORAGE, tracking: str | None = None,
             concurrency: int | None = None, run_dir: str | Path = "vlmsearch-runs", device: str = "auto",
             progress: bool = True) -> pd.DataFrame:
    """`vlmsearch validate --study STUDY`: one row per validated design (search value, mean and
    95% CI of each objective over seeds, ranks); `df.attrs` holds kendall_tau, spearman_rho,
    top_k_agreement, within_noise. Raises ValueError (ValidateError) or UnknownStudy for bad
    input, KeyboardInterrupt when interrupted (calling again continues)."""
    from dashboard import DEFAULT_TRACKING
    from vlmsearch.validate import ValidateOptions, validate_study
    from vlmsearch.validation_summary import frame as validation_frame

    options = ValidateOptions(study=study, top=top, steps=steps, budget_factor=budget_factor, seeds=seeds,
                              storage=storage, tracking=tracking or DEFAULT_TRACKING,
                              concurrency=concurrency, run_dir=Path(run_dir), device=device)
    say = Console(stderr=True, soft_wrap=True).print if progress else (lambda *_: None)
    return validation_frame(validate_study(options, lambda m: say(m, markup=False)))


def results(study: str, *, storage: str = DEFAULT_STORAGE) -> pd.DataFrame:
    """One row per trial of `study`: its status and numbers, every final metric (a column each,
    by name) and every design factor (`subset` and `config.<path>` columns, e.g.
    `config.fusion.kind`, `config.experts.clip.tokens`)."""
    with _reading(storage, study) as store:
        return frame(store.trials(study))


def front(study: str, *, storage: str = DEFAULT_STORAGE) -> pd.DataFrame:
    """The study's Pareto front (feasible, non-dominated trials), as `results` shows rows."""
    with _reading(storage, study) as store:
        return frame(store.pareto_front(study).trials)


def report(study: str, *, storage: str = DEFAULT_STORAGE, validation: pd.DataFrame | None = None,
           seed: int = 0, similarity: int = 0, run_dir: str | Path = "vlmsearch-runs") -> FactorReport:
    """`vlmsearch report`: the factor analysis of the study's complete search trials; its tables
    (`.marginal`, `.effects`, `.importance`, `.interactions`, `.best`, `.ablation`, `.design`,
    `.similarity`) are DataFrames. `validation`: validation trials (design_hash, seed, metric
    columns) for the ablation's "within noise" marks (default: the study's own, from `vlmsearch
    validate`). `similarity`: that many training images for the experts' linear CKA (0: none; the
    CLI's default is 128). Raises UnknownStudy, or TooFewTrials (a ValueError)."""
    from vlmsearch.report_view import attach_similarity, stored_space, study_report

    with _reading(storage, study) as store:
        found = study_report(store, study, validation, seed)
        space = stored_space(store, study)
    if similarity:
        attach_similarity(found, space, similarity, Path(run_dir), lambda m: warnings.warn(m, stacklevel=3))
    return found


def frame(found: list[StoredTrial]) -> pd.DataFrame:
    """Stored trials as a DataFrame (see `results`)."""
    import pandas as pd

    from storage import metric_columns

    rows = []
    for t in found:
        row: dict[str, Any] = {"study": t.study, "number": t.number, "status": t.status, "steps": t.steps,
                               "pareto_rank": t.pareto_rank, "config_hash": t.config_hash,
                               "failure_reason": t.failure.reason if t.failure else None,
                               "reused_from": t.reused_from, "host": t.host, "duration_s": t.duration_s}
        row |= {m: t.metrics.get(m) for m in metric_columns(found)}
        if "experts" in t.config:
            row["subset"] = "+".join(t.config["experts"])  # primary first
        row |= {f"config.{k}": v for k, v in pd.json_normalize(t.config, sep=".").iloc[0].items()}
        rows.append(row)
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else list(TRIAL_COLUMNS))


@contextmanager
def _reading(url: str, study: str) -> Iterator[ResultsStore]:
    """The store on `url`, read-only (raises UnknownStudy when it holds no results)."""
    from storage import UnknownStudy

    store = read_store(url)
    if store is None:
        raise UnknownStudy(study, [], url)
    try:
        with store.guard():
            yield store
    finally:
        store.close()


def read_store(url: str) -> ResultsStore | None:
    """The store on `url` to read; None when it is not there (a SQLite file that does not exist,
    or a database without vlmsearch's tables: left as it is). Raises StorageError (one line
    naming it, never its password) when it cannot be opened."""
    from storage import ResultsStore, exists

    if not exists(url):
        return None
    store = ResultsStore(url, create=False, read_only=True)
    if not store.holds_results:
        store.close()
        return None
    return store
