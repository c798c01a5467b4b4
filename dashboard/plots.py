"""The study's Pareto front as files MLflow shows: `pareto.csv`, `pareto.png`, `pareto.html`.

The plot is the first objective (y) against the second (x; the trial number when there is one
objective): every complete trial in grey, infeasible ones as crosses, the front in colour and
joined by a step line. The HTML page is self-contained (inline SVG, no network): hovering a point
shows the trial, its metrics and its design; a table lists the front.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Design:
    number: int
    metrics: Mapping[str, float]
    rank: int | None  # 0 = on the front; None = infeasible
    config: Mapping[str, Any] = field(default_factory=dict)  # TrialConfig.canonical()
    config_hash: str = ""
    run_id: str | None = None


@dataclass(frozen=True)
class Axis:
    metric: str  # "trial" for the trial number
    maximize: bool

    def value(self, design: Design) -> float:
        if self.metric == "trial":
            return float(design.number)
        return float(design.metrics.get(self.metric, math.nan))

    @property
    def label(self) -> str:
        if self.metric == "trial":
            return "trial"
        return f"{self.metric} ({'higher' if self.maximize else 'lower'} is better)"


def axes(objectives: Sequence[Any]) -> tuple[Axis, Axis]:
    """(x, y): y is the first objective, x the second (or the trial number)."""
    y = Axis(objectives[0].metric, objectives[0].direction == "maximize")
    x = Axis(objectives[1].metric, objectives[1].direction == "maximize") if len(objectives) > 1 \
        else Axis("trial", False)
    return x, y


def summary(config: Mapping[str, Any]) -> str:
    """`clip+dinov2 | sequence_concat | share_by_row | mlp2x_gelu`."""
    experts = "+".join(config.get("experts", {})) or "?"
    fusion = config.get("fusion", {})
    kind = fusion.get("kind", "?") if isinstance(fusion, Mapping) else str(fusion)
    projector = config.get("projector", "?")
    if isinstance(projector, Mapping):  # one per expert: `clip:linear,dinov2:mlp2x_gelu`
        projector = ",".join(f"{name}:{value}" for name, value in projector.items())
    return f"{experts} | {kind} | {config.get('positions', '?')} | {projector}"


def front_of(designs: Sequence[Design], objectives: Sequence[Any]) -> list[Design]:
    """Rank-0 designs, best first on the first objective."""
    _, y = axes(objectives)
    front = [d for d in designs if d.rank == 0]
    return sorted(front, key=lambda d: (-y.value(d) if y.maximize else y.value(d), d.number))


def pareto_csv(designs: Sequence[Design], objectives: Sequence[Any]) -> str:
    front = front_of(designs, objectives)
    names = [o.metric for o in objectives]
    others = sorted({k for d in front for k in d.metrics} - set(names))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", *names, "design", "config_hash", "run_id", *others])
    for d in front:
        writer.writerow([d.number, *(d.metrics.get(n, "") for n in names), summary(d.config),
                         d.config_hash, d.run_id or "",
                         *(d.metrics.get(n, "") for n in others)])
    return buffer.getvalue()


def _finite(designs: Sequence[Design], x: Axis, y: Axis) -> list[Design]:
    return [d for d in designs if math.isfinite(x.value(d)) and math.isfinite(y.value(d))]


def _steps(front: Sequence[Design], x: Axis, y: Axis) -> list[tuple[float, float]]:
    """The attainment staircase through the front, sorted along x from its best end."""
    ordered = sorted(front, key=lambda d: (-x.value(d) if x.maximize else x.value(d)))
    line: list[tuple[float, float]] = []
    for d in ordered:
        if line:
            line.append((x.value(d), line[-1][1]))
        line.append((x.value(d), y.value(d)))
    return line


def pareto_png(designs: Sequence[Design], objectives: Sequence[Any], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    x, y = axes(objectives)
    shown = _finite(designs, x, y)
    figure = Figure(figsize=(7, 4.5), dpi=110)
    ax = figure.add_subplot()
    rest = [d for d in shown if d.rank not in (0, None)]
    bad = [d for d in shown if d.rank is None]
    front = [d for d in shown if d.rank == 0]
    ax.scatter([x.value(d) for d in rest], [y.value(d) for d in rest], c="#b0b0b0", s=28,
               label="dominated" if rest else None)
    ax.scatter([x.value(d) for d in bad], [y.value(d) for d in bad], c="#d62728", marker="x", s=30,
               label="infeasible" if bad else None)
    line = _steps(front, x, y)
    ax.plot([p[0] for p in line], [p[1] for p in line], c="#1f77b4", lw=1.2, zorder=2)
    ax.scatter([x.value(d) for d in front], [y.value(d) for d in front], c="#1f77b4", s=46, zorder=3,
               label="Pareto front")
    for d in front:
        ax.annotate(str(d.number), (x.value(d), y.value(d)), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    ax.set_xlabel(x.label)
    ax.set_ylabel(y.label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


_W, _H, _PAD = 720, 440, 60


def _scale(values: Sequence[float], low_px: float, high_px: float) -> Any:
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high == low:
        low, high = low - 1.0, high + 1.0
    span = high - low
    low, high = low - 0.05 * span, high + 0.05 * span
    return lambda v: low_px + (v - low) / (high - low) * (high_px - low_px), (low, high)


def _tooltip(d: Design, objectives: Sequence[Any]) -> str:
    lines = [f"trial {d.number}" + (" (Pareto)" if d.rank == 0 else ""), summary(d.config)]
    lines += [f"{o.metric} = {d.metrics.get(o.metric, float('nan')):.4g}" for o in objectives]
    return html.escape("\n".join(lines))


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def pareto_html(designs: Sequence[Design], objectives: Sequence[Any], title: str,
                hypervolume: float) -> str:
    x, y = axes(objectives)
    shown = _finite(designs, x, y)
    sx, (xl, xh) = _scale([x.value(d) for d in shown], _PAD, _W - 20)
    sy, (yl, yh) = _scale([y.value(d) for d in shown], _H - _PAD, 20)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="100%" '
             f'style="max-width: {_W}px" role="img">',
             f'<rect x="{_PAD}" y="20" width="{_W - 20 - _PAD}" height="{_H - 20 - _PAD}" fill="#fafafa" '
             'stroke="#ccc"/>']
    for v in _ticks(xl, xh):
        parts.append(f'<text x="{sx(v):.1f}" y="{_H - _PAD + 16}" class="tick" '
                     f'text-anchor="middle">{v:.3g}</text>')
    for v in _ticks(yl, yh):
        parts.append(f'<text x="{_PAD - 6}" y="{sy(v) + 4:.1f}" class="tick" '
                     f'text-anchor="end">{v:.3g}</text>')
    parts.append(f'<text x="{(_PAD + _W - 20) / 2}" y="{_H - 18}" '
                 f'text-anchor="middle">{html.escape(x.label)}</text>')
    parts.append(f'<text x="16" y="{(_H - _PAD + 20) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 16 {(_H - _PAD + 20) / 2})">{html.escape(y.label)}</text>')
    line = _steps([d for d in shown if d.rank == 0], x, y)
    if line:
        points = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in line)
        parts.append(f'<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    for d in sorted(shown, key=lambda d: d.rank == 0):  # the front drawn last, on top
        cx, cy = sx(x.value(d)), sy(y.value(d))
        tip = f"<title>{_tooltip(d, objectives)}</title>"
        if d.rank is None:
            parts.append(f'<g class="infeasible"><path d="M{cx - 4:.1f},{cy - 4:.1f}l8,8m0,-8l-8,8" '
                         f'stroke="#d62728" stroke-width="2"/>{tip}</g>')
        else:
            cls = "front" if d.rank == 0 else "dominated"
            parts.append(f'<circle class="{cls}" data-trial="{d.number}" cx="{cx:.1f}" cy="{cy:.1f}" '
                         f'r="{6 if d.rank == 0 else 4.5}">{tip}</circle>')
            if d.rank == 0:
                parts.append(f'<text x="{cx + 7:.1f}" y="{cy - 6:.1f}" class="label">{d.number}</text>')
    parts.append("</svg>")
    return _PAGE.format(title=html.escape(title), hv=f"{hypervolume:.6g}",
                        svg="\n".join(parts), table=_front_table(designs, objectives))


def _front_table(designs: Sequence[Design], objectives: Sequence[Any]) -> str:
    head = "".join(f"<th>{html.escape(o.metric)}</th>" for o in objectives)
    rows = []
    for d in front_of(designs, objectives):
        cells = "".join(f"<td>{d.metrics.get(o.metric, float('nan')):.4g}</td>" for o in objectives)
        rows.append(f"<tr><td>{d.number}</td>{cells}<td>{html.escape(summary(d.config))}</td></tr>")
    return f"<table><tr><th>trial</th>{head}<th>design</th></tr>{''.join(rows)}</table>"


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 13px system-ui, sans-serif; margin: 12px; color: #222; }}
.tick {{ font-size: 10px; fill: #555; }} .label {{ font-size: 10px; fill: #1f77b4; }}
circle.front {{ fill: #1f77b4; }} circle.dominated {{ fill: #b0b0b0; }}
circle:hover {{ stroke: #000; stroke-width: 2; cursor: pointer; }}
table {{ border-collapse: collapse; margin-top: 10px; }}
td, th {{ border: 1px solid #ddd; padding: 3px 8px; text-align: left; }}
</style></head><body>
<h3>{title}</h3>
<p>hypervolume {hv}. Blue: the Pareto front; grey: dominated;
red crosses: infeasible. Hover a point for its design.</p>
{svg}
{table}
</body></html>
"""
