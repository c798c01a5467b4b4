"""MLflow tracking of a search (a parent run per study, a child run per trial, Pareto tags,
hypervolume, front plots; validation runs and the fidelity plot) and the MLflow UI: `MlflowSink`
records a search, `serve` shows it.
Names are imported when first used, so `import dashboard` loads no MLflow; `layout` (the tag and
run names a study has in MLflow) is a module of plain constants and functions."""

from __future__ import annotations

from common import lazy_names

_WHERE = {  # public name -> "module" (the same name there, or the module itself) or "module:attribute"
    "layout": "dashboard.layout",
    "DEFAULT_TRACKING": "dashboard.client", "TRACKING_OFF": "dashboard.client:OFF",
    "TrackingError": "dashboard.client", "artifact_root": "dashboard.client",
    "check_uri": "dashboard.client", "open_client": "dashboard.client", "parent_run": "dashboard.client",
    "LOOPBACK": "dashboard.hosts", "parse_hosts": "dashboard.hosts",
    "Design": "dashboard.plots", "pareto_csv": "dashboard.plots", "pareto_html": "dashboard.plots",
    "pareto_png": "dashboard.plots",
    "DashboardError": "dashboard.server", "serve": "dashboard.server", "start_server": "dashboard.server",
    "stop_server": "dashboard.server", "wait_until_up": "dashboard.server",
    "MlflowSink": "dashboard.sink", "StudyTracker": "dashboard.tracker",
    "FidelityDot": "dashboard.validation", "ValidationTracker": "dashboard.validation",
    "fidelity_png": "dashboard.validation",
}
__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
