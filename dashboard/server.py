"""`vlmsearch dashboard`: the MLflow UI on the tracking store, and the links to each study's front.

    check the store and the port -> `mlflow server` (one worker, loopback unless --host says
    otherwise, basic auth with --auth) -> wait for /health -> print links -> run until Ctrl-C
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from common import redact_url, sqlite_path
from dashboard import layout
from dashboard.client import TrackingError, check_uri, is_remote, open_client
from dashboard.hosts import LOOPBACK, allowed_hosts, machine_names

PASSWORD_ENV = "VLMSEARCH_DASHBOARD_PASSWORD"


class DashboardError(RuntimeError):
    """The dashboard cannot start as asked; the message names the fix."""


@dataclass(frozen=True)
class StudyLinks:
    study: str
    pareto_runs: str  # the study's runs, filtered to the Pareto front
    chart: str  # the same in the chart view (scatter of the objectives)
    plot: str | None  # the parent run's pareto.html


def study_links(base: str, experiment_id: str, parent_id: str | None, study: str,
                first_objective: str = "") -> StudyLinks:
    """Sorted by the first objective (best first), the UI lists runs flat instead of nesting them
    under the collapsed parent run."""
    runs = (f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"  # not the GenAI view
            f"&searchFilter={quote(layout.PARETO_FILTER)}")
    metric, _, direction = first_objective.partition(":")
    if metric:
        ascending = str(direction != "maximize").lower()
        runs += f"&orderByKey={quote(f'metrics.`{metric}`')}&orderByAsc={ascending}"
    plot = (f"{base}/#/experiments/{experiment_id}/runs/{parent_id}/artifacts/pareto.html"
            "?workflowType=machine_learning" if parent_id else None)
    return StudyLinks(study, runs, f"{runs}&compareRunsMode=CHART", plot)


@dataclass(frozen=True)
class FoundStudy:
    name: str
    experiment_id: str
    parent_id: str | None
    first_objective: str

    def links(self, base: str) -> StudyLinks:
        return study_links(base, self.experiment_id, self.parent_id, self.name, self.first_objective)


def find_studies(uri: str, only: str | None = None) -> list[FoundStudy]:
    """The vlmsearch studies in the tracking store (all, or `only`)."""
    client = open_client(uri)
    found = []
    for experiment in client.search_experiments():
        study = experiment.tags.get(layout.STUDY)
        if study is None or (only is not None and study != only):
            continue
        parents = client.search_runs([experiment.experiment_id], f"tags.`{layout.KIND}` = 'study'",
                                     max_results=1)
        found.append(FoundStudy(study, experiment.experiment_id, parents[0].info.run_id if parents else None,
                                experiment.tags.get(layout.FIRST_OBJECTIVE, "")))
    if only is not None and not found:
        from search_space import did_you_mean

        names = [e.tags.get(layout.STUDY) for e in client.search_experiments()]
        known = sorted(n for n in names if n)
        raise DashboardError(f"unknown study '{only}'{did_you_mean(only, known)} in {redact_url(uri)}; "
                             f"known: {', '.join(known) or 'none'}")
    return found


def check_store(uri: str) -> None:
    try:
        check_uri(uri)
    except TrackingError as exc:
        raise DashboardError(str(exc)) from None
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        raise DashboardError(f"no MLflow store at {path}: run a search first (`vlmsearch run SPACE.yaml`) "
                             "or pass --tracking with the URI the search used")


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DashboardError(f"cannot listen on {host}:{port} ({exc.strerror}); another dashboard "
                                 "may be running there: pass --port") from None


def auth_config(folder: Path, user: str, say: Callable[[str], None]) -> dict[str, str]:
    """Environment for MLflow's basic-auth app: its user database and the admin's password (from
    $VLMSEARCH_DASHBOARD_PASSWORD, else generated once and kept in a file only the owner reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "dashboard-auth.db"
    config = folder / "dashboard-auth.ini"
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{database.resolve()}\nadmin_username = {user}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
                      encoding="utf-8")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config.resolve()),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
           or _kept_secret(folder / "dashboard-secret-key")}  # signs the UI's CSRF tokens
    password = os.environ.get(PASSWORD_ENV)
    secret = folder / "dashboard-admin-password"
    if database.exists():
        say(f"basic auth: users in {database} (the admin password was set when it was created)")
        if password:
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
        return env
    if not password:
        password = _kept_secret(secret)
        say(f"basic auth: user '{user}', password in {secret} (readable only by you); "
            f"set ${PASSWORD_ENV} to choose it")
    else:
        say(f"basic auth: user '{user}', password from ${PASSWORD_ENV}")
    env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
    return env


def _kept_secret(path: Path) -> str:
    """A random secret made once and kept in a file only its owner can read."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    value = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(value + "\n", encoding="utf-8")
    return value


# MLflow 3 also starts a job runner (8 more processes, ~1.4 GB) for GenAI jobs; the dashboard
# needs none of it.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def server_command(uri: str, host: str, port: int, artifacts: Path, auth: bool,
                   hosts: list[str] | None = None) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
               "--port", str(port), "--workers", "1", "--artifacts-destination", str(artifacts.resolve()),
               "--uvicorn-opts", "--log-level warning"]  # no line per request in the user's terminal
    return command + (["--app-name", "basic-auth"] if auth else []) + \
        (["--allowed-hosts", ",".join(hosts)] if hosts else [])


def start_server(uri: str, host: str, port: int, artifacts: Path, auth: bool = False,
                 env: dict[str, str] | None = None, output: Any = None,
                 hosts: list[str] | None = None) -> subprocess.Popen:
    """`mlflow server` on `uri` in its own session (so its workers stop with it: `stop_server`),
    without MLflow's job runner. `output`: where its messages go (default: this terminal);
    `hosts`: the Host headers it answers (dashboard/hosts.py; None: MLflow's loopback default)."""
    return subprocess.Popen(server_command(uri, host, port, artifacts, auth, hosts),
                            env={**os.environ, **SERVER_ENV, **(env or {})}, stdout=output,
                            stderr=subprocess.STDOUT if output is not None else None,
                            start_new_session=True)


def wait_until_up(process: subprocess.Popen, base: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DashboardError(f"the MLflow server exited with code {process.returncode} before answering; "
                                 "its messages are above")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    process.terminate()
    raise DashboardError(f"the MLflow server did not answer at {base}/health within {timeout_s:.0f} s")


def browse_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def serve(uri: str, host: str, port: int, study: str | None, auth: bool, user: str,
          say: Callable[[str], None], show: Callable[[str], None],
          extra_hosts: list[str] | None = None) -> int:
    """Start the UI, print the links, run until Ctrl-C. Remote stores: print the links only."""
    check_store(uri)
    if is_remote(uri):
        base = uri.rstrip("/")
        _print_links(base, find_studies(uri, study), show)
        show(f"{redact_url(uri)} is a running MLflow server: nothing to start")
        return 0
    studies = find_studies(uri, study)
    check_port(host, port)
    path = sqlite_path(uri)
    folder = path.parent if path is not None else Path("vlmsearch-runs")
    base = f"http://{browse_host(host)}:{port}"
    hosts = allowed_hosts(host, extra_hosts or [])
    if hosts and host not in LOOPBACK:
        say(f"other machines reach it as http://NAME:{port} for NAME one of: "
            f"{', '.join(machine_names() + (extra_hosts or []))}; another name (a DNS alias, a "
            "proxy) needs --allowed-hosts NAME")
    process = start_server(uri, host, port, folder / "mlartifacts", auth,
                           auth_config(folder, user, say) if auth else None, hosts=hosts)
    stop_on_signals()
    try:
        wait_until_up(process, base)
        if auth:
            (folder / "dashboard-auth.db").chmod(0o600)  # password hashes: the owner's only
        show(f"MLflow UI: {base}  (tracking store {redact_url(uri)}; Ctrl-C stops it)")
        _print_links(base, studies, show)
        process.wait()
    except (KeyboardInterrupt, Stopped):
        pass
    finally:
        stop_server(process)
    return 0


class Stopped(Exception):
    """SIGTERM or SIGHUP: stop the server like Ctrl-C does (it runs in its own session, so it gets
    no signal of ours and would outlive us)."""


def stop_on_signals() -> None:
    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def _print_links(base: str, studies: list[FoundStudy], show: Callable[[str], None]) -> None:
    if not studies:
        show("no vlmsearch studies in this store yet")
    for study in studies:
        links = study.links(base)
        show(f"study '{study.name}':")
        show(f"  Pareto runs:  {links.pareto_runs}")
        show(f"  chart view:   {links.chart}")
        if links.plot:
            show(f"  Pareto plot:  {links.plot}")


def stop_server(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, and its children: SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
