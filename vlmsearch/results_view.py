"""`vlmsearch studies` and `vlmsearch results`: tables over the SQL results store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.table import Table

from storage import TRIAL_STATUSES, StoredTrial, StudySummary

EXTRA = ("visual_tokens", "positions_used")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.3f}"
    return str(value)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def studies_table(found: Sequence[StudySummary], where: str) -> Table:
    table = Table(title=f"studies in {where}", header_style="bold")
    table.add_column("study")
    table.add_column("status")
    table.add_column("trials", justify="right")
    for status in TRIAL_STATUSES:
        table.add_column(status, justify="right")
    table.add_column("hypervolume", justify="right")
    table.add_column("created (UTC)")
    table.add_column("updated (UTC)")
    for s in found:
        table.add_row(s.name, s.status, str(s.total), *(str(s.counts[k]) for k in TRIAL_STATUSES),
                      _fmt(s.hypervolume), _when(s.created_at), _when(s.updated_at))
    return table


def describe(config: dict[str, Any]) -> str:
    """`clip+dinov2 | sequence_concat | share_all` (or `op0=none op1=...` for a non-VLM
    evaluator's point), from a stored canonical point."""
    if "experts" not in config:
        return " ".join(f"{k}={v}" for k, v in (config.get("parameters") or {}).items())
    fusion = config.get("fusion") or {}
    experts = "+".join(config.get("experts") or {})
    return f"{experts} | {fusion.get('kind', '?')} | {config.get('positions', '?')}"


def results_table(title: str, found: Sequence[StoredTrial], objectives: Sequence[Any]) -> Table:
    """One row a trial: status, steps, the objectives, tokens/positions, rank, design, hash."""
    table = Table(title=title, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("status")
    table.add_column("steps", justify="right")
    columns = [o.metric for o in objectives]
    for o in objectives:
        table.add_column(f"{o.metric} ({'max' if o.direction == 'maximize' else 'min'})", justify="right")
    for extra in EXTRA:
        if extra not in columns and any(extra in t.metrics for t in found):
            columns.append(extra)
            table.add_column(extra, justify="right")
    table.add_column("rank", justify="right")
    table.add_column("design")
    table.add_column("hash")
    for t in found:
        status = f"failed ({t.failure.reason})" if t.failure else t.status
        table.add_row(str(t.number), status, str(t.steps), *(_fmt(t.metrics.get(m)) for m in columns),
                      _fmt(t.pareto_rank), describe(t.config), t.config_hash)
    return table
