"""The fault plugin installed as a real distribution (a dist-info folder with an entry point,
as `pip install --target` leaves it) in a temporary folder on PYTHONPATH, for `vlmsearch`
processes started by the tests."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from search_space.components import register_evaluator_plugins

HERE = Path(__file__).resolve().parent


def install_fault_plugin(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "fault_plugin.py", target / "vlmsearch_fault_plugin.py")
    info = target / "vlmsearch_fault_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vlmsearch-fault-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[vlmsearch.evaluators]\nfault = vlmsearch_fault_plugin:EVALUATOR\n")
    return target


@pytest.fixture
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for a `vlmsearch` process that has the fault plugin installed (installed in
    this process too, so the test can read back the studies it ran)."""
    target = install_fault_plugin(tmp_path_factory.mktemp("site") / "site")
    if str(target) not in sys.path:
        sys.path.append(str(target))
        importlib.invalidate_caches()
        register_evaluator_plugins()
    path = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
