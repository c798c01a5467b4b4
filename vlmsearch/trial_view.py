"""`vlmsearch trial`: a progress bar while one design trains, then its numbers."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from search_space import Resources, TrialConfig, TrialResult


def run_with_progress(point: TrialConfig, steps: int | None, device: str, run_dir: Path,
                      console: Console, resources: Resources | None = None) -> TrialResult:
    from trials import TrialOptions, default_cache, run_trial, with_steps

    resources = resources or Resources()
    if not point.trains_vlm:  # looked up or computed by its evaluator: nothing to show meanwhile
        result = run_trial(point, TrialOptions(steps=steps, device=device))
        result.study, result.number = point.name, 0
        return result
    trained = with_steps(point, steps)  # the design as trained: its hash is the result's
    cache = default_cache(run_dir)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"{point.name} ({trained.config_hash})", total=trained.train.steps, loss="-")

        def progress(step: int, _total: int, loss: float) -> None:
            bar.update(task, completed=step, loss=f"{loss:.3f}")

        result = run_trial(point, TrialOptions(steps=steps, device=device, cache=cache,
                                               progress=progress, resources=resources))
    stats = cache.stats
    console.print(f"feature cache: {stats.hits} hits, {stats.misses} misses, "
                  f"{cache.disk_bytes() / 2**20:.1f} MiB on disk under {cache.root}",
                  highlight=False)
    result.study, result.number = point.name, 0
    return result


def result_table(result: TrialResult) -> Table:
    title = f"{result.config.name} ({result.config_hash}): {result.status} after {result.steps} steps"
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if result.failure:
        table.add_row("failure", f"{result.failure.reason}: {result.failure.message}")
    for name, value in result.ordered_metrics().items():
        shown = f"{value:.3f}" if isinstance(value, float) and not float(value).is_integer() else f"{value:g}"
        table.add_row(name, shown)
    return table
