"""A LLaVA-format data set with a broken image or file: `run` and `trial` answer with one message
naming the problem (exit 2, no traceback) before anything trains, and no study is created; with
`data.skip_missing` a missing image is left out and the trial trains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trials.data.test_data import break_records, llava  # noqa: F401 - the fixture

SPACE = """\
# vlmsearch run space.yaml
name: bad-data
data: {{benchmark: llava, path: {path}, image_folder: {folder}, train_size: 40, eval_size: 20,
        image_size: 32, skip_missing: {skip}}}
experts: {{clip: {{source: tiny-clip, tokens: 4}}}}
positions: {positions}
train: {{steps: 2, batch_size: 4}}
objectives: [{{metric: accuracy, direction: maximize}}]
search: {{trials: 2}}
"""


def vlmsearch(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("change", ["unreadable image", "missing image", "bad json", "too few records"])
def test_a_broken_llava_set_is_bad_input_for_run_and_trial(llava: Path, tmp_path: Path,  # noqa: F811
                                                            change: str) -> None:
    expected = break_records(llava, change)
    folder = llava.parent / "images"
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(path=llava, folder=folder, positions="{choices: [original, share_all]}",
                                  skip="false"))
    point = tmp_path / "point.yaml"
    point.write_text(SPACE.format(path=llava, folder=folder, positions="original", skip="false"))
    for args in (("run", str(space), "--tracking", "none"), ("trial", str(point))):
        done = vlmsearch(tmp_path, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert expected in done.stderr and "Traceback" not in done.stdout + done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "vlmsearch-runs" / "results.db").exists(), "no study is created"


@pytest.mark.parametrize("change", [None, "missing image"])
def test_the_intact_set_passes_the_check_and_trains(llava: Path, tmp_path: Path,  # noqa: F811
                                                    change: str | None) -> None:
    """The intact set trains; so does one with a missing image under data.skip_missing."""
    if change is not None:
        break_records(llava, change)
    point = tmp_path / "point.yaml"
    point.write_text(SPACE.format(path=llava, folder=llava.parent / "images", positions="original",
                                  skip="true" if change else "false"))
    done = vlmsearch(tmp_path, "trial", str(point), "--json")
    assert done.returncode == 0, done.stderr
    assert '"status": "complete"' in done.stdout.splitlines()[-1]
