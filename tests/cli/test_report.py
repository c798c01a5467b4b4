"""`vlmsearch report` as a user runs it: a real store, real subprocesses, exit codes, output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.search_space.analysis.grids import FACTORIAL_SPACE, fill, planted

ROOT = Path(__file__).resolve().parents[2]
TINY_SPACE = (FACTORIAL_SPACE.replace("name: factorial", "name: tiny")
              .replace("tokens: {choices: [4, 16]}", "tokens: 16")
              .replace("projector: {choices: [linear, mlp2x_gelu]}", "projector: linear")
              .replace("lr: {choices: [1.0e-3, 3.0e-3]}", "lr: 1.0e-3"))  # 4 designs


def vlmsearch(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('report')}/results.db"
    fill(url, FACTORIAL_SPACE, planted)
    fill(url, TINY_SPACE, planted)
    return url


@pytest.mark.slow
def test_markdown_to_stdout(store: str, tmp_path: Path) -> None:
    ran = vlmsearch("report", "--study", "factorial", "--storage", store, "--tracking", "none",
                    "--similarity-images", "16", "--run-dir", str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    text = ran.stdout
    assert text.startswith("# Factor report: study 'factorial'")
    assert "32 complete search trials" in text
    for title in ("## Marginal means", "## Adjusted effects", "## Importances", "## Strongest interactions",
                  "## Ablation", "## Expert similarity"):
        assert title in text
    assert "| accuracy | fusion | sequence_concat |" in text and ran.stderr == ""
    # the pool's two experts, run on 16 training images: one CKA pair
    pair = next(line for line in text.splitlines() if line.startswith("| clip | dinov2 |"))
    assert 0.0 <= float(pair.split("|")[3]) <= 1.0
    assert "similarity over the first 16 training images" in text


@pytest.mark.slow
def test_json_has_every_table_as_records(store: str, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    ran = vlmsearch("report", "--study", "factorial", "--storage", store, "--format", "json",
                    "--out", str(out), "--tracking", "none", "--similarity-images", "0")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "" and f"wrote {out}" in ran.stderr
    data = json.loads(out.read_text())
    assert data["study"] == "factorial" and data["trials"] == 32
    assert data["targets"] == [{"metric": "accuracy", "direction": "maximize"},
                               {"metric": "visual_tokens", "direction": "minimize"}]
    for table in ("design", "marginal", "effects", "importance", "interactions", "best", "ablation"):
        assert isinstance(data[table], list) and data[table], table
    fusion = [r for r in data["effects"] if r["metric"] == "accuracy" and r["factor"] == "fusion"]
    assert fusion[0]["coef"] == pytest.approx(0.03 + 0.08, abs=0.01)  # planted (dinov2 always there)...
    import vlmsearch as api  # ...and the Python API gives the same numbers

    report = api.report("factorial", storage=store)
    assert report.effects["coef"].tolist() == pytest.approx([r["coef"] for r in data["effects"]], nan_ok=True)


@pytest.mark.slow
def test_html_is_one_page_with_inline_plots(store: str, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    ran = vlmsearch("report", "--study", "factorial", "--storage", store, "--format", "html",
                    "--out", str(out), "--tracking", "none", "--similarity-images", "0")
    assert ran.returncode == 0, ran.stderr
    page = out.read_text()
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") == 2
    assert "<table" in page and "Factor report: study &#x27;factorial&#x27;" in page


def test_unknown_study_exits_2_like_results(store: str) -> None:
    ran = vlmsearch("report", "--study", "factorail", "--storage", store)
    results = vlmsearch("results", "--study", "factorail", "--storage", store)
    assert ran.returncode == results.returncode == 2
    assert ran.stderr == results.stderr and "did you mean 'factorial'" in ran.stderr
    assert "Traceback" not in ran.stderr and ran.stdout == ""


def test_too_few_trials_and_missing_store_exit_2(store: str, tmp_path: Path) -> None:
    ran = vlmsearch("report", "--study", "tiny", "--storage", store)
    assert ran.returncode == 2 and ran.stdout == ""
    assert ran.stderr.strip() == "study 'tiny': 4 complete search trial(s); a factor report needs at least 5"
    missing = vlmsearch("report", "--study", "x", "--storage", f"sqlite:///{tmp_path}/none.db")
    assert missing.returncode == 2 and "unknown study 'x'; no studies in" in missing.stderr
    assert not (tmp_path / "none.db").exists()
    bad = vlmsearch("report", "--study", "tiny", "--storage", store, "--format", "pdf")
    assert bad.returncode == 2 and "pdf" in bad.stderr
