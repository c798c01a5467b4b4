"""The Python API as README shows it: the README's example run as written (in a fresh folder),
then what each call returns checked against the store and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## The Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs_and_its_frames_match_the_store(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(EXAMPLES)
    script = readme_example() + (
        "import json\n"
        "print('ROWS', json.dumps({'trials': len(trials), 'front': sorted(front['number'].tolist()),"
        " 'columns': trials.columns.tolist(), 'status': result.status}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout.split("ROWS ", 1)[1])
    assert rows["trials"] == 12 and rows["status"] == "complete"
    for column in ("number", "status", "accuracy", "latency_ms", "pareto_rank", "reused_from",
                   "config.parameters.op0", "config.parameters.dataset"):
        assert column in rows["columns"]
    command = ["results", "--study", "nasbench201", "--pareto", "--format", "json"]
    shown = subprocess.run([sys.executable, "-m", "vlmsearch", *command], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
    assert sorted(t["number"] for t in json.loads(shown.stdout)) == rows["front"]


def test_refusals_raise_with_the_clis_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vlmsearch
    from search_space import SpaceError
    from storage import UnknownStudy

    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path}/results.db"
    frame = vlmsearch.run(EXAMPLES / "nasbench201.yaml", trials=2, tracking="none", storage=storage,
                          progress=False)
    assert len(frame) == 2 and set(frame["status"]) == {"complete"}
    with pytest.raises(vlmsearch.SearchFailed, match=r"already has 2 trials .* add --resume"):
        vlmsearch.run(EXAMPLES / "nasbench201.yaml", trials=2, tracking="none", storage=storage,
                      progress=False)
    assert len(vlmsearch.run(EXAMPLES / "nasbench201.yaml", trials=3, tracking="none", storage=storage,
                             progress=False, resume=True)) == 3
    with pytest.raises(UnknownStudy, match="unknown study 'nope'; known: nasbench201"):
        vlmsearch.results("nope", storage=storage)
    (tmp_path / "bad.yaml").write_text("name: bad\nsearch: {sampler: tpee}\n")
    with pytest.raises(SpaceError, match="did you mean 'tpe'"):
        vlmsearch.run(tmp_path / "bad.yaml")
