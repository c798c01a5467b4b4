"""Issue 19, class 12: what a command says about what it did (not bad input, so no exit 2)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from dashboard.sink import MlflowSink
from tests.conftest import EXAMPLES


def vlmsearch(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_resume_of_a_study_that_is_not_there_says_so(tmp_path: Path) -> None:
    line = ["run", str(EXAMPLES / "nasbench201.yaml"), "--trials", "2", "--resume", "--study", "fresh",
            "--tracking", "none"]
    first = vlmsearch(tmp_path, *line)
    assert first.returncode == 0, first.stderr
    assert "--resume: study 'fresh' is not in sqlite:///vlmsearch-runs/results.db yet, so it starts now" \
        in first.stderr
    again = vlmsearch(tmp_path, *line[:3], "3", *line[4:])
    assert again.returncode == 0, again.stderr
    assert "is not in" not in again.stderr, "a real resume says nothing of the kind"


def test_the_sync_hint_names_the_stores_the_search_used() -> None:
    said: list[str] = []
    sink = MlflowSink("http://bob:pw-in-uri@127.0.0.1:1", said.append,
                      storage="postgresql+psycopg://bob:pw-in-url@db:5432/vlms")
    command = sink.sync_command("small")
    assert command == ("vlmsearch sync --study small --tracking http://bob:***@127.0.0.1:1 "
                       "--storage postgresql+psycopg://bob:***@db:5432/vlms")
    assert MlflowSink("sqlite:///vlmsearch-runs/mlflow.db").sync_command("s") == "vlmsearch sync --study s"


def test_the_progress_line_shows_the_hash_of_the_design_as_trained(tmp_path: Path) -> None:
    point = (EXAMPLES / "comm_point.yaml").read_text().replace("train_size: 2000, eval_size: 400",
                                                               "train_size: 64, eval_size: 32")
    assert "train_size: 64" in point  # a small copy: the cache of 2,400 images is not what is tested
    (tmp_path / "point.yaml").write_text(point)
    done = vlmsearch(tmp_path, "trial", "point.yaml", "--steps", "2", "--json")
    assert done.returncode == 0, done.stderr
    shown = set(re.findall(r"\(([0-9a-f]{16})\)", done.stdout + done.stderr))
    result = done.stdout.strip().splitlines()[-1]
    assert len(shown) == 1 and shown.pop() in result
