"""The factor report as a self-contained HTML page (tables, and matplotlib plots inlined as
base64 PNG), and its files on the study's MLflow parent run (`report/report.html`, the PNGs)."""

from __future__ import annotations

import base64
import html
import io
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vlmsearch.report_view import TITLES, best_line, sections

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from search_space.analysis import FactorReport

STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;"
         "font-size:13px;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:2px 8px;text-align:right}"
         "th{background:#f0f0f0}td:nth-child(-n+3){text-align:left}img{max-width:100%}")


def _figure(width: float, height: float) -> Figure:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def marginal_png(report: FactorReport) -> bytes:
    """The first objective's marginal mean per level, with its bootstrap 95% CI, a panel a factor."""
    metric = report.targets[0][0]
    table = report.marginal[report.marginal["metric"] == metric]
    names = list(dict.fromkeys(table["factor"]))
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure = _figure(4.2 * columns, 2.8 * rows)
    for i, name in enumerate(names):
        axis = figure.add_subplot(rows, columns, i + 1)
        part = table[table["factor"] == name]
        low = (part["mean"] - part["ci_low"]).fillna(0).clip(lower=0)
        high = (part["ci_high"] - part["mean"]).fillna(0).clip(lower=0)
        axis.errorbar(range(len(part)), part["mean"], yerr=[low, high], fmt="o", capsize=4)
        axis.set_xticks(range(len(part)), [str(v) for v in part["level"]], rotation=20, fontsize=8,
                        ha="right")
        axis.set_title(name, fontsize=10)
        axis.set_ylabel(metric, fontsize=8)
    figure.suptitle(f"{metric}: marginal mean per level (bootstrap 95% CI)")
    return _png(figure)


def importance_png(report: FactorReport) -> bytes:
    """PED-ANOVA and fANOVA importances, a panel per metric."""
    metrics = list(dict.fromkeys(report.importance["metric"])) if not report.importance.empty else []
    figure = _figure(6.0, 0.4 + 2.6 * max(1, len(metrics)))
    for i, metric in enumerate(metrics):
        axis = figure.add_subplot(len(metrics), 1, i + 1)
        part = report.importance[report.importance["metric"] == metric].iloc[::-1]
        places = range(len(part))
        axis.barh([p + 0.2 for p in places], part["fanova"].fillna(0), height=0.4, label="fANOVA")
        axis.barh([p - 0.2 for p in places], part["ped_anova"].fillna(0), height=0.4, label="PED-ANOVA")
        axis.set_yticks(list(places), list(part["factor"]), fontsize=8)
        axis.set_title(f"importance for {metric}", fontsize=10)
        axis.legend(fontsize=8)
    return _png(figure)


PLOTS: dict[str, Callable[[FactorReport], bytes]] = {"marginal_means.png": marginal_png,
                                                      "importances.png": importance_png}


def plots(report: FactorReport) -> dict[str, bytes]:
    return {name: draw(report) for name, draw in PLOTS.items()}


def _table(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p><em>(none)</em></p>"
    return table.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}", border=0)


def to_html(report: FactorReport, study: str, images: dict[str, bytes] | None = None) -> str:
    """One page: the best design, every table, the two plots, the notes."""
    images = plots(report) if images is None else images
    inline = {n: base64.b64encode(data).decode("ascii") for n, data in images.items()}
    title = html.escape(f"Factor report: study '{study}'")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
             f"<style>{STYLE}</style></head><body><h1>{title}</h1>",
             f"<p>{len(report.design)} complete search trials; factors: "
             f"{html.escape(', '.join(report.factors))}</p>",
             f"<p>Best design by {html.escape(report.targets[0][0])}: {html.escape(best_line(report))}</p>"]
    parts += [f"<img alt='{n}' src='data:image/png;base64,{data}'>" for n, data in inline.items()]
    for name, table in sections(report).items():
        parts += [f"<h2>{html.escape(TITLES[name])}</h2>", _table(table)]
    if report.notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
        parts.append(f"<h2>Notes</h2><ul>{items}</ul>")
    return "\n".join([*parts, "</body></html>"]) + "\n"


def publish(report: FactorReport, study: str, uri: str, warn: Callable[[str], None]) -> str | None:
    """Log `report/report.html` and the PNGs on the study's parent run; the run id, or None (no
    tracking, no parent run, or MLflow failed: `warn` says why; the report never fails)."""
    from common import redact_secrets, redact_url, sqlite_path
    from dashboard import TRACKING_OFF, open_client, parent_run

    path = sqlite_path(uri)
    if uri.strip().lower() in TRACKING_OFF or (path is not None and not path.exists()):
        return None
    try:
        client = open_client(uri)
        found = parent_run(client, study)
        if found is None:
            return None
        run_id = found[1]
        images = plots(report)
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "report.html").write_text(to_html(report, study, images), encoding="utf-8")
            for name, data in images.items():
                (Path(folder) / name).write_bytes(data)
            client.log_artifacts(run_id, folder, artifact_path="report")
        return run_id
    except Exception as exc:  # tracking is a bonus: a report is never lost to MLflow
        reason = redact_secrets(f"{type(exc).__name__}: {exc}", uri).splitlines()[0][:300]
        warn(f"note: the report was not logged to MLflow at {redact_url(uri)} ({reason})")
        return None
