"""`vlmsearch validate`'s table and summary lines, and `results --validation`'s table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from vlmsearch.validation_summary import NOISE_RULE, DesignResult, Validation


def _value(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return str(int(value)) if float(value).is_integer() and abs(value) >= 1 else f"{value:.3f}"


def _ci(result: DesignResult, metric: str) -> str:
    ci = result.ci[metric]
    if math.isnan(ci.mean):
        return "-"
    return _value(ci.mean) if math.isnan(ci.half_width) else f"{_value(ci.mean)} ± {ci.half_width:.3f}"


def validation_table(validation: Validation) -> Table:
    """One row a design: search value, validation mean ± 95% CI of each objective, seeds, ranks."""
    first = validation.first.metric
    table = Table(title=f"validation of '{validation.study}': {len(validation.designs)} designs, "
                        f"{validation.seeds} seed(s), {validation.steps} steps", header_style="bold")
    for name, justify in (("#", "right"), ("design", "left"), ("front", "left"), ("steps", "right"),
                          (f"search {first}", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for objective in validation.objectives:
        table.add_column(f"{objective.metric} (mean ± 95% CI)", justify="right")
    for name in ("seeds", "rank search", "rank validation"):
        table.add_column(name, justify="right")
    for d in validation.designs:
        table.add_row(str(d.design.number), d.design.label, "yes" if d.design.front else "",
                      str(d.design.steps), _value(d.design.search.get(first)),
                      *(_ci(d, o.metric) for o in validation.objectives), str(len(d.seeds)),
                      _value(d.rank_search), _value(d.rank_validation))
    return table


def summary_lines(validation: Validation) -> list[str]:
    first = validation.first.metric
    lines = [f"Kendall tau {_value(validation.kendall_tau)}, Spearman rho {_value(validation.spearman_rho)}: "
             f"the search ranking ({first} at the search budget) against the validation ranking (its mean "
             f"over seeds at {validation.steps} steps)",
             f"top-{validation.k} agreement: {_value(validation.top_k_agreement)} (the share of the search's "
             f"top {validation.k} that are the validation's top {validation.k})"]
    numbers = {d.design.label: d.design.number for d in validation.designs}
    judged = [p for p in validation.noise if p.within_noise is not None]
    noise = [f"#{numbers[p.a]} vs #{numbers[p.b]} (p {p.p_value:.2f})" for p in judged if p.within_noise]
    apart = [f"#{numbers[p.a]} vs #{numbers[p.b]} (p {p.p_value:.3f})" for p in judged if not p.within_noise]
    if validation.noise:
        lines.append(f"front pairs within seed noise: {', '.join(noise) or 'none'}; told apart: "
                     f"{', '.join(apart) or 'none'} [{NOISE_RULE}]")
    tied = [f"#{numbers[p.b]}" for p in validation.near_best if p.within_noise]
    if validation.near_best and any(p.within_noise is not None for p in validation.near_best):
        best = numbers[validation.near_best[0].a]
        lines.append(f"within seed noise of the validation's best (#{best}): {', '.join(tied) or 'none'}")
    if validation.failed:
        lines.append(f"{validation.failed} validation trial(s) did not complete (see `vlmsearch results "
                     f"--study {validation.study} --validation`); run the same command again to retry them")
    return lines


def validation_rows_table(title: str, rows: Sequence[Any], metrics: Sequence[str]) -> Table:
    """`results --validation`: one row a stored validation trial."""
    table = Table(title=title, header_style="bold")
    for name in ("#", "validates", "seed", "steps", "status", *metrics, "duration (s)", "design hash",
                 "hash"):
        table.add_column(name, justify="left" if name in ("status", "design hash", "hash") else "right")
    for r in rows:
        status = f"failed ({r.failure.reason})" if r.failure else r.status
        table.add_row(str(r.number), str(r.validates), str(r.seed), str(r.steps), status,
                      *(_value(r.metrics.get(m)) for m in metrics), _value(r.duration_s), r.design_hash,
                      r.config_hash)
    return table


def show_validation_rows(store: Any, study: str, format_: str, where: str, out: Any) -> None:
    """`results --study X --validation` in `format_` (table, csv or json)."""
    import csv
    import json
    import sys

    rows = store.validation_trials(study)
    if format_ == "json":
        sys.stdout.write(json.dumps([r.to_json() for r in rows]) + "\n")
        return
    metrics = sorted({m for r in rows for m in r.metrics})
    if format_ == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["number", "validates", "seed", "steps", "status", "failure_reason", "design_hash",
                         "config_hash", "duration_s", *metrics])
        for r in rows:
            writer.writerow([r.number, r.validates, r.seed, r.steps, r.status,
                             r.failure.reason if r.failure else "", r.design_hash, r.config_hash,
                             r.duration_s, *(r.metrics.get(m, "") for m in metrics)])
        return
    objectives = [o.metric for o in store.space(study).objectives] if rows else []
    shown = [m for m in objectives if m in metrics]
    out.print(validation_rows_table(f"validation trials of '{study}': {len(rows)} in {where}", rows, shown))
