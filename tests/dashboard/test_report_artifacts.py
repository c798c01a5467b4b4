"""`vlmsearch report` on a study that has an MLflow parent run: the HTML page and its plots land
under `report/` on the parent run, and the MLflow UI shows the page (headless Chromium)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboard.conftest import Study, vlmsearch
from tests.dashboard.test_dashboard import _browser, _shots, _wait_for, dashboard
from tests.search_space.analysis.grids import FACTORIAL_SPACE, fill, planted

pytestmark = pytest.mark.xdist_group("reported")  # one process: the module's study is reported once


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """A 32-design study in the store, replayed into MLflow by `vlmsearch sync`, then reported."""
    folder = tmp_path_factory.mktemp("reported")
    study = Study(folder, f"sqlite:///{folder}/results.db", f"sqlite:///{folder}/mlflow.db", "factorial")
    fill(study.storage, FACTORIAL_SPACE, planted)
    where = ("--storage", study.storage, "--tracking", study.tracking)
    synced = vlmsearch("sync", "--study", study.name, *where, cwd=folder)
    assert synced.returncode == 0, synced.stderr[-2000:]
    ran = vlmsearch("report", "--study", study.name, *where, "--out", "report.md", cwd=folder)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "logged report/report.html on MLflow run" in ran.stderr
    return study


@pytest.mark.slow
def test_the_parent_run_gets_the_report_and_its_plots(reported: Study) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(reported.tracking)
    experiment = client.get_experiment_by_name(reported.name)
    parents = client.search_runs([experiment.experiment_id], "tags.`vlmsearch.kind` = 'study'")
    assert len(parents) == 1
    run_id = parents[0].info.run_id
    files = {f.path for f in client.list_artifacts(run_id, "report")}
    assert files == {"report/report.html", "report/marginal_means.png", "report/importances.png"}
    page = client.download_artifacts(run_id, "report/report.html", str(reported.folder))
    text = Path(page).read_text(encoding="utf-8")
    assert "Factor report: study &#x27;factorial&#x27;" in text and text.count("data:image/png;base64,") == 2


@pytest.mark.slow
def test_unreachable_tracking_warns_and_the_report_still_prints(reported: Study) -> None:
    ran = vlmsearch("report", "--study", reported.name, "--storage", reported.storage,
                    "--tracking", "http://nobody:secret@127.0.0.1:1", "--similarity-images", "0",
                    cwd=reported.folder)  # nothing listens
    assert ran.returncode == 0 and ran.stdout.startswith("# Factor report")
    assert "note: the report was not logged to MLflow" in ran.stderr and "secret" not in ran.stderr


@pytest.mark.slow
def test_a_browser_shows_the_report_in_mlflow(reported: Study, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    shots = _shots(tmp_path)
    browser = _browser()
    try:
        with dashboard(reported) as ui:
            plot = ui.link("Pareto plot:")  # the parent run's pareto.html; report/ is beside it
            browser.get(plot.replace("artifacts/pareto.html", "artifacts/report/report.html"))
            frame = _wait_for(browser, lambda b: b.find_elements(By.TAG_NAME, "iframe"))[0]
            browser.switch_to.frame(frame)
            heading = _wait_for(browser, lambda b: b.find_elements(By.TAG_NAME, "h1"))[0]
            assert "Factor report" in heading.text
            assert len(browser.find_elements(By.TAG_NAME, "img")) == 2
            browser.switch_to.default_content()
            browser.save_screenshot(str(shots / "dashboard-factor-report.png"))
    finally:
        browser.quit()
    assert (shots / "dashboard-factor-report.png").read_bytes()[:4] == b"\x89PNG"
