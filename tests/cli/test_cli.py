"""The command line as a user runs it: real subprocesses, exit codes, output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search_space.components import POSITIONS, PROJECTORS
from search_space.fusions import FUSIONS
from search_space.presets import FAMILIES, LM_PRESETS, PRESETS

ROOT = Path(__file__).resolve().parents[2]


def vlmsearch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("name", ["quickstart", "comm_point", "mousi", "comm", "eagle", "planted"])
def test_every_example_validates(name: str) -> None:
    result = vlmsearch("check", f"examples/{name}.yaml")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert "visual tokens:" in result.stdout and "positions used:" in result.stdout
    first = (ROOT / "examples" / f"{name}.yaml").read_text().splitlines()[0]
    assert first.startswith("# vlmsearch "), "examples begin with the command that runs them"


def test_check_summary_of_a_point() -> None:
    out = vlmsearch("check", "examples/comm_point.yaml").stdout
    assert "valid point 'comm-like'" in out
    assert "visual tokens: 80" in out and "positions used: 12" in out


def test_check_summary_of_a_space() -> None:
    out = vlmsearch("check", "examples/quickstart.yaml").stdout
    assert "space size: unbounded" in out
    assert "visual tokens: 4 .. 108" in out
    assert "free parameters (13)" in out


def test_check_does_not_import_torch() -> None:
    code = ("import sys; from vlmsearch.cli import main; sys.argv=['vlmsearch','check',"
            "'examples/eagle.yaml']\ntry:\n main()\nexcept SystemExit as e:\n assert e.code == 0\n"
            "assert 'torch' not in sys.modules, 'check imported torch'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_invalid_file_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nexperts: {clip: {source: tiny-clp}}\nfusion: {kind: cross_atn}\n")
    result = vlmsearch("check", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "experts.clip.source: line 2: unknown expert preset 'tiny-clp'" in result.stderr
    assert "fusion: line 3: unknown fusion 'cross_atn'; did you mean 'cross_attention'?" in result.stderr


def test_schema_is_json_schema_that_names_every_fusion() -> None:
    result = vlmsearch("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["type"] == "object" and "experts" in schema["properties"]
    text = result.stdout
    for kind in FUSIONS.names():
        assert f'"{kind}"' in text


@pytest.mark.parametrize(("what", "names"), [
    ("fusions", FUSIONS.names()), ("positions", POSITIONS.names()),
    ("projectors", PROJECTORS.names()), ("experts", FAMILIES.names()),
    ("presets", PRESETS.names() + LM_PRESETS.names()),
])
def test_list(what: str, names: list[str]) -> None:
    result = vlmsearch("list", what)
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == names
    assert all(len(line.split()) > 1 for line in result.stdout.splitlines()), "each has a description"


def test_list_unknown_registry_is_usage_error() -> None:
    result = vlmsearch("list", "fusion")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "vlmsearch"
    assert script.exists()
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "check" in result.stdout
