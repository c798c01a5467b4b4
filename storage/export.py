"""Trials out of the store: JSON (an array of CONTRACT.md's trial JSON) and CSV (one row a trial,
one column a final metric, the design as a JSON column)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import IO

from search_space import METRIC_ORDER
from storage.queries import StoredTrial

FIELDS = ("study", "number", "status", "steps", "pareto_rank", "config_hash", "failure_reason",
          "failure_message", "reused_from", "host", "started_at", "finished_at", "duration_s")


def to_json(found: Sequence[StoredTrial]) -> str:
    """A JSON array, one trial JSON per line."""
    if not found:
        return "[]"
    return "[\n" + ",\n".join(json.dumps(t.to_json()) for t in found) + "\n]"


def metric_columns(found: Sequence[StoredTrial]) -> list[str]:
    """Overall accuracy, then per skill, then the contract's metrics, then any others (sorted)."""
    names = {name for t in found for name in t.metrics}
    ordered = [m for m in METRIC_ORDER[:1] if m in names]
    ordered += sorted(n for n in names if n.startswith("accuracy/"))
    ordered += [m for m in METRIC_ORDER[1:] if m in names]
    return ordered + sorted(names - set(ordered))


def write_csv(found: Sequence[StoredTrial], handle: IO[str]) -> None:
    columns = metric_columns(found)
    out = csv.writer(handle, lineterminator="\n")
    out.writerow([*FIELDS, *columns, "config"])
    for t in found:
        cells = {"study": t.study, "number": t.number, "status": t.status, "steps": t.steps,
                 "pareto_rank": t.pareto_rank, "config_hash": t.config_hash,
                 "failure_reason": t.failure.reason if t.failure else None,
                 "failure_message": t.failure.message if t.failure else None, "reused_from": t.reused_from,
                 "host": t.host, "started_at": t.started_at.isoformat() if t.started_at else None,
                 "finished_at": t.finished_at.isoformat() if t.finished_at else None,
                 "duration_s": t.duration_s}
        row = ["" if cells[f] is None else cells[f] for f in FIELDS]
        row += [t.metrics.get(m, "") for m in columns]
        out.writerow([*row, json.dumps(t.config, separators=(",", ":"))])
