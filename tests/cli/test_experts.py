"""`vlmsearch experts SPACE.yaml [--similarity]` as a user runs it, and `vlmsearch.similarity`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import vlmsearch

ROOT = Path(__file__).resolve().parents[2]
SPACE = """\
name: similar
data: {benchmark: probe, train_size: 32, eval_size: 8, image_size: 64, seed: 0}
experts:
  pool:
    clip: {source: tiny-clip, layers: {choices: [-1, -2]}, tokens: {choices: [16, 64]}}
    clip_copy: {source: tiny-clip, tokens: 16}
    dinov2: {source: tiny-dinov2, tokens: 16}
    sam: {source: tiny-sam, image_size: 128, tokens: 16}
fusion: {kind: sequence_concat}
objectives: [{metric: accuracy, direction: maximize}]
"""


def vlmsearch_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "similar.yaml"
    path.write_text(SPACE)
    return path


def test_the_table_lists_the_pool_without_torch(space_file: Path) -> None:
    code = ("import sys; from vlmsearch.cli import main; sys.argv=['vlmsearch','experts',"
            f"{str(space_file)!r}]\ntry:\n main()\nexcept SystemExit as e:\n assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules, 'experts imported torch'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "experts of 'similar' (4)" in result.stdout
    clip_row = next(line for line in result.stdout.splitlines() if "│ clip " in line)
    for cell in ("tiny-clip", "clip", "12x12", "64", "16 | 64", "-1 | -2"):
        assert cell in clip_row


def test_the_table_as_json(space_file: Path) -> None:
    result = vlmsearch_cli("experts", str(space_file), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["experts"]
    assert [r["expert"] for r in rows] == ["clip", "clip_copy", "dinov2", "sam"]
    assert rows[3] == {"expert": "sam", "source": "tiny-sam", "family": "sam", "image size": "128",
                       "grid": "8x8", "width": "32", "tokens": "16", "layers": "-1"}


@pytest.mark.slow
def test_similarity_flags_the_copy(space_file: Path, tmp_path: Path) -> None:
    run_dir = str(tmp_path / "runs")
    result = vlmsearch_cli("experts", str(space_file), "--similarity", "--images", "16", "--format", "json",
                           "--device", "cpu", "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["experts"] == ["clip", "clip_copy", "dinov2", "sam"] and found["samples"] == 16
    assert found["cka"][0][1] == pytest.approx(1.0, abs=1e-6)
    assert found["cka"][0][2] < 0.8 and found["cka"][0][3] < 0.8
    assert found["near_duplicates"][0] == {"a": "clip", "b": "clip_copy", "cka": pytest.approx(1.0, abs=1e-6)}
    assert list((tmp_path / "runs" / "cache").glob("*.features"))  # the trials' feature cache

    table = vlmsearch_cli("experts", str(space_file), "--similarity", "--images", "16", "--threshold", "0.99",
                          "--device", "cpu", "--run-dir", run_dir)
    assert table.returncode == 0, table.stderr
    title = "linear CKA of the experts of 'similar' (mean-pooled features of 16 training images)"
    assert title in table.stdout
    flagged = [line for line in table.stdout.splitlines() if "near duplicates" in line]
    assert flagged == ["clip and clip_copy: CKA 1.00 >= 0.99: near duplicates; a search needs only one "
                       "of them"]


def test_a_bad_yaml_exits_2_as_check_shows_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nexperts: {clip: {source: tiny-clp}}\nfusion: {kind: cross_atn}\n")
    result = vlmsearch_cli("experts", str(bad), "--similarity")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == vlmsearch_cli("check", str(bad)).stderr
    assert "tiny-clp" in result.stderr


def test_one_expert_cannot_be_compared(tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    one.write_text(SPACE.split("    clip_copy")[0] + "fusion: {kind: sequence_concat}\n"
                   "objectives: [{metric: accuracy, direction: maximize}]\n")
    assert vlmsearch_cli("experts", str(one)).returncode == 0
    result = vlmsearch_cli("experts", str(one), "--similarity")
    assert result.returncode == 2
    assert "only one expert (clip): similarity compares two or more" in result.stderr


@pytest.mark.slow
def test_the_python_api_gives_a_dataframe(space_file: Path, tmp_path: Path) -> None:
    frame = vlmsearch.similarity(space_file, images=8, device="cpu", run_dir=tmp_path / "runs")
    assert list(frame.index) == list(frame.columns) == ["clip", "clip_copy", "dinov2", "sam"]
    assert frame.loc["clip", "clip_copy"] == pytest.approx(1.0, abs=1e-9)
    assert frame.loc["dinov2", "clip"] == frame.loc["clip", "dinov2"] < 0.8


@pytest.mark.slow
def test_an_expert_that_cannot_be_loaded_exits_1_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    missing.write_text(SPACE.replace("source: tiny-dinov2", "source: someone/not-a-model"))
    listed = vlmsearch_cli("experts", str(missing))
    assert listed.returncode == 0 and "someone/not-a-model" in listed.stdout  # geometry shown as ?
    result = vlmsearch_cli("experts", str(missing), "--similarity", "--images", "4", "--device", "cpu",
                           "--run-dir", str(tmp_path / "runs"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "expert 'dinov2' (someone/not-a-model) cannot be loaded" in result.stderr
