"""`vlmsearch validate` as a user runs it: a real tiny study, re-trained at a larger budget with
two seeds; the store, the JSON, the table and MLflow agree; a rerun trains nothing; the search's
results are untouched; bad input exits 2 naming the fix."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from search_space.analysis import kendall_tau, mean_ci
from storage import ResultsStore
from tests.storage.helpers import info, record

ROOT = Path(__file__).resolve().parents[2]
SPACE = """\
name: tiny
data: {benchmark: probe, train_size: 48, eval_size: 48, image_size: 64, seed: 0}
experts:
  pool:
    clip: {source: tiny-clip, tokens: {choices: [4, 16]}}
    dinov2: {source: tiny-dinov2, tokens: 16}
  subset: {min: 1, max: 2}
fusion:
  choices:
    - {kind: channel_concat}
    - {kind: sequence_concat}
train: {steps: 3, batch_size: 8, lr: {low: 1.0e-3, high: 3.0e-3, log: true}}
objectives:
  - {metric: accuracy, direction: maximize}
  - {metric: visual_tokens, direction: minimize}
search: {trials: 4, concurrency: 1, seed: 1, early_stopping: {kind: none}}
"""


def vlmsearch(*args: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A finished search of four real (tiny) trials, with MLflow on a SQLite file."""
    folder = tmp_path_factory.mktemp("validate")
    (folder / "tiny.yaml").write_text(SPACE)
    where = {"storage": f"sqlite:///{folder}/results.db", "tracking": f"sqlite:///{folder}/mlflow.db",
             "run_dir": str(folder / "runs")}
    done = vlmsearch("run", str(folder / "tiny.yaml"), "--storage", where["storage"], "--tracking",
                     where["tracking"], "--run-dir", where["run_dir"])
    assert done.returncode == 0, done.stderr
    return where


def flags(where: dict[str, str]) -> list[str]:
    return ["--study", "tiny", "--storage", where["storage"], "--tracking", where["tracking"], "--run-dir",
            where["run_dir"]]


@pytest.mark.slow
def test_validate_records_reports_and_resumes(study: dict[str, str]) -> None:
    before = [vlmsearch("results", "--study", "tiny", "--storage", study["storage"], "--format", "json",
                        *extra).stdout for extra in ([], ["--pareto"])]
    ran = vlmsearch("validate", *flags(study), "--top", "3", "--seeds", "2", "--steps", "5",
                    "--format", "json")
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    designs = report["designs"]
    assert 2 <= len(designs) <= 5 and (report["steps"], report["seeds"]) == (5, 2)
    assert any(d["front"] for d in designs)
    assert report["trained"] == 2 * len(designs) and "validation 1/" in ran.stderr

    with ResultsStore(study["storage"]) as store:
        rows = store.validation_trials("tiny")
        front = {t.number for t in store.pareto_front("tiny").trials}
    assert len(rows) == 2 * len(designs) and {r.status for r in rows} == {"complete"}
    assert {d["number"] for d in designs} >= front  # the whole front is validated
    for d in designs:
        mine = sorted((r for r in rows if r.design_hash == d["config_hash"]), key=lambda r: r.seed)
        assert [r.seed for r in mine] == d["seeds"] == [0, 1] and {r.steps for r in mine} == {5}
        assert all(r.validates == d["number"] and r.config["train"]["steps"] == 5 for r in mine)
        values = [r.metrics["accuracy"] for r in mine]
        assert d["validation"]["accuracy"]["mean"] == pytest.approx(sum(values) / 2)
        assert d["validation"]["accuracy"]["ci95"] == pytest.approx(mean_ci(values).half_width)
    tau = kendall_tau([d["search"]["accuracy"] for d in designs],
                      [d["validation"]["accuracy"]["mean"] for d in designs])
    assert "kendall_tau" in report and "spearman_rho" in report and "top_k_agreement" in report
    assert (report["kendall_tau"] is None) == math.isnan(tau)
    if report["kendall_tau"] is not None:
        assert report["kendall_tau"] == pytest.approx(tau)  # the same tau from the stored rows

    check_mlflow(study["tracking"], report, len(rows))
    after = [vlmsearch("results", "--study", "tiny", "--storage", study["storage"], "--format", "json",
                       *extra).stdout for extra in ([], ["--pareto"])]
    assert after == before  # the search's trials and front are as they were

    again = vlmsearch("validate", *flags(study), "--top", "3", "--seeds", "2", "--steps", "5")
    assert again.returncode == 0, again.stderr
    assert "validation 1/" not in again.stderr  # nothing trained again
    assert all(d["config_hash"][:6] in again.stdout for d in designs)
    k = max(1, min(3, len(designs) // 2))  # --top 3, at most half the designs (else no test)
    assert report["k"] == k and "Kendall tau" in again.stdout and f"top-{k} agreement" in again.stdout
    best = next(d for d in designs if d["rank_validation"] == 1)
    assert len(report["within_noise_of_best"]) == len(designs) - 1
    assert all(p["a"] == best["number"] for p in report["within_noise_of_best"])
    with ResultsStore(study["storage"]) as store:
        assert [(r.number, r.duration_s) for r in store.validation_trials("tiny")] == \
            [(r.number, r.duration_s) for r in rows]
    listed = vlmsearch("results", "--study", "tiny", "--storage", study["storage"], "--validation",
                       "--format", "json")
    assert [r["number"] for r in json.loads(listed.stdout)] == [r.number for r in rows]

    import vlmsearch as api

    frame = api.validate("tiny", top=3, seeds=2, steps=5, storage=study["storage"],
                         tracking=study["tracking"], run_dir=study["run_dir"], progress=False)
    assert sorted(frame["number"]) == sorted(d["number"] for d in designs)
    assert frame.attrs["kendall_tau"] == report["kendall_tau"] and "within_noise" in frame.attrs
    by_number = {d["number"]: d["validation"]["accuracy"]["mean"] for d in designs}
    assert list(frame["accuracy_mean"]) == pytest.approx([by_number[n] for n in frame["number"]])


def check_mlflow(uri: str, report: dict, count: int) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("vlmsearch.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("vlmsearch.role") == "validation"]
    assert len(children) == count and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert all(r.data.params["train.steps"] == "5" and "accuracy" in r.data.metrics for r in children)
    metrics, tags = parent.data.metrics, parent.data.tags
    assert (metrics["validation/steps"], metrics["validation/seeds"]) == (5, 2)
    tau = report["kendall_tau"]
    assert tags["fidelity_tau"] == ("nan" if tau is None else f"{tau:.4f}")
    if tau is not None:
        assert metrics["validation/kendall_tau"] == pytest.approx(tau)
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "validation")] == \
        ["validation/fidelity.png"]


@pytest.mark.slow  # (seven commands)
def test_bad_input_exits_2_naming_the_fix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/results.db"
    with ResultsStore(url) as store:
        store.study_started(info("small"))
        for n in range(3):
            record(store, "small", n, status="failed")
        store.study_finished("small")
    base = ["--storage", url, "--tracking", "none", "--run-dir", str(tmp_path / "runs")]
    cases = [(["--study", "small", "--steps", "10", "--budget-factor", "2"],
              "give --steps N or --budget-factor F"),
             (["--study", "small", "--budget-factor", "0"], "--budget-factor must be above 0"),
             (["--study", "smal"], "unknown study 'smal'; did you mean 'small'? known: small"),
             (["--study", "small"], "study 'small' has no complete trials to validate")]
    for args, message in cases:
        done = vlmsearch("validate", *args, *base)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr
    shown = vlmsearch("results", "--study", "smal", "--storage", url)
    assert shown.stderr == vlmsearch("validate", "--study", "smal", *base).stderr  # the same message
    missing = vlmsearch("validate", "--study", "x", "--storage", f"sqlite:///{tmp_path}/none.db",
                        "--tracking", "none")
    assert missing.returncode == 2 and "unknown study 'x'" in missing.stderr
    assert not (tmp_path / "none.db").exists()
