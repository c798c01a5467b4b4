"""`vlmsearch dashboard` as a user starts it: real MLflow UI, real HTTP, headless Chromium."""

from __future__ import annotations

import base64
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from dashboard.server import stop_server
from storage import ResultsStore
from tests.dashboard.conftest import Study, free_port, vlmsearch

# one test process runs every test of the session's `finished_study`, so it is run once, not twice
pytestmark = pytest.mark.xdist_group("finished_study")

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


class Dashboard:
    def __init__(self, process: subprocess.Popen[str], lines: queue.Queue[str], port: int) -> None:
        self.process, self.lines, self.port = process, lines, port
        self.base = f"http://127.0.0.1:{port}"
        self.printed: list[str] = []

    def link(self, label: str, timeout_s: float = 120) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.printed:
                if line.strip().startswith(label):
                    return line.split(label, 1)[1].strip()
            try:
                self.printed.append(self.lines.get(timeout=1))
            except queue.Empty:
                assert self.process.poll() is None, f"dashboard exited: {self.printed}"
        raise AssertionError(f"no '{label}' line in {self.printed}")


@contextmanager
def dashboard(study: Study, *args: str, env: dict[str, str] | None = None) -> Iterator[Dashboard]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "vlmsearch", "dashboard", "--tracking", study.tracking,
                                "--port", str(port), *args], cwd=study.folder, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                               env={**os.environ, **(env or {})})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        yield Dashboard(process, lines, port)
    finally:
        stop_server(process)


def _get(url: str, auth: tuple[str, str] | None = None, host: str | None = None) -> int:
    """The status of a GET; `host`: the Host header (what another machine names the server by)."""
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _answers(url: str) -> bool:
    try:
        return _get(url) == 200
    except (urllib.error.URLError, OSError):
        return False


def _pareto(study: Study) -> set[int]:
    with ResultsStore(study.storage, create=False) as store:
        return {t.number for t in store.pareto_front(study.name).trials}


def test_dashboard_serves_the_store_and_prints_the_links(finished_study: Study) -> None:
    with dashboard(finished_study) as ui:
        runs = ui.link("Pareto runs:")
        plot = ui.link("Pareto plot:")
        assert runs.startswith(f"{ui.base}/#/experiments/") and "searchFilter=tags.is_pareto" in runs
        assert "orderByKey=metrics.%60accuracy%60&orderByAsc=false" in runs
        assert "/artifacts/pareto.html" in plot
        assert _get(f"{ui.base}/health") == 200
        listening = [line for line in ui.printed if line.startswith("MLflow UI:")]
        assert listening and "127.0.0.1" in listening[0]
    # the context stopped the dashboard with SIGTERM: the MLflow server (its own session) went too
    deadline = time.monotonic() + 30
    while _answers(f"{ui.base}/health") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _answers(f"{ui.base}/health")


def _api_as(base: str, host: str) -> int:
    return _get(f"{base}/ajax-api/2.0/mlflow/experiments/search?max_results=1", host=host)


def test_listening_on_every_interface_answers_other_machines(finished_study: Study) -> None:
    """Issue 19, class 8: MLflow answers 403 to a Host that is not loopback or private; the
    dashboard allows this machine's names and addresses and --allowed-hosts, nothing else."""
    from dashboard.hosts import machine_names

    outside = [n for n in machine_names() if n not in ("127.0.0.1", "localhost", "[::1]")]
    assert outside, "this machine has a name besides loopback"
    with dashboard(finished_study, "--host", "0.0.0.0", "--allowed-hosts", "vlms-proxy.example") as ui:
        ui.link("Pareto runs:")
        for name in outside:
            assert _api_as(ui.base, f"{name}:{ui.port}") == 200, name
        assert _api_as(ui.base, "vlms-proxy.example") == 200
        assert _api_as(ui.base, f"vlms-proxy.example:{ui.port}") == 200
        assert _api_as(ui.base, "attacker.example") == 403, "DNS rebinding is still refused"


def test_auth_refuses_anonymous_requests(finished_study: Study, tmp_path: Path) -> None:
    study = Study(tmp_path, finished_study.storage, f"sqlite:///{tmp_path}/mlflow.db")
    shutil.copy(finished_study.folder / "mlflow.db", tmp_path / "mlflow.db")
    with dashboard(study, "--auth", env={"VLMSEARCH_DASHBOARD_PASSWORD": "pw-for-the-test-1"}) as ui:
        ui.link("Pareto runs:")
        api = f"{ui.base}/api/2.0/mlflow/experiments/search?max_results=10"
        assert _get(api) == 401
        assert _get(f"{ui.base}/") == 401
        assert _get(api, ("admin", "wrong-password")) == 401
        assert _get(api, ("admin", "pw-for-the-test-1")) == 200
    assert (tmp_path / "dashboard-auth.db").exists()


def test_dashboard_bad_input_exits_2_with_one_message(finished_study: Study, tmp_path: Path) -> None:
    missing = vlmsearch("dashboard", "--tracking", f"sqlite:///{tmp_path}/none.db", cwd=tmp_path)
    assert missing.returncode == 2 and "no MLflow store at" in missing.stderr
    unknown = vlmsearch("dashboard", "--tracking", finished_study.tracking, "--study", "smal", cwd=tmp_path)
    assert unknown.returncode == 2 and "did you mean 'small'" in unknown.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = vlmsearch("dashboard", "--tracking", finished_study.tracking, "--port", str(port),
                         cwd=tmp_path)
    assert busy.returncode == 2 and "pass --port" in busy.stderr
    for ran in (missing, unknown, busy):
        assert "Traceback" not in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert not (tmp_path / "none.db").exists()


def _browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium and chromium-driver (see .ci/run)")
        pytest.skip("chromium / chromedriver not installed (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1600,950"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("VLMSEARCH_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait_for(browser, condition, timeout_s: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout_s, poll_frequency=0.5).until(condition)


def _close_assistant(browser) -> None:
    """MLflow 3 opens an assistant panel beside the table; close it so the picture shows the runs."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    for button in browser.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        with suppress(WebDriverException):
            button.click()


def test_a_browser_finds_the_pareto_runs_and_the_plot(finished_study: Study, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    front = _pareto(finished_study)
    names = {f"trial-{n:04d}" for n in front}
    others = {f"trial-{n:04d}" for n in range(6)} - names
    shots = _shots(tmp_path)
    browser = _browser()
    try:
        with dashboard(finished_study) as ui:
            browser.get(ui.link("Pareto runs:"))
            _wait_for(browser, lambda b: names <= {e.text for e in b.find_elements(By.PARTIAL_LINK_TEXT,
                                                                                    "trial-")})
            _close_assistant(browser)
            time.sleep(1)  # let the table settle before the picture
            shown = {e.text for e in browser.find_elements(By.PARTIAL_LINK_TEXT, "trial-")}
            assert shown == names and not shown & others
            browser.save_screenshot(str(shots / "dashboard-pareto-runs.png"))

            browser.get(ui.link("chart view:"))
            _wait_for(browser, lambda b: "Add chart" in b.find_element(By.TAG_NAME, "body").text)
            time.sleep(2)
            browser.save_screenshot(str(shots / "dashboard-chart-view.png"))

            browser.get(ui.link("Pareto plot:"))
            frame = _wait_for(browser, lambda b: b.find_elements(By.TAG_NAME, "iframe"))[0]
            browser.switch_to.frame(frame)
            points = _wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "circle.front"))
            assert {int(p.get_attribute("data-trial")) for p in points} == front
            browser.switch_to.default_content()
            browser.save_screenshot(str(shots / "dashboard-pareto-plot.png"))
    finally:
        browser.quit()
    for name in ("dashboard-pareto-runs.png", "dashboard-chart-view.png", "dashboard-pareto-plot.png"):
        assert (shots / name).read_bytes()[:4] == b"\x89PNG"
