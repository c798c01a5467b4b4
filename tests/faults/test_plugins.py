"""Custom evaluators come only through installed entry points; a broken plugin is named with its
error instead of breaking every command."""

from __future__ import annotations

import os
from pathlib import Path

from tests.faults.helpers import vlmsearch, write_space


def test_an_installed_evaluator_is_listed_checked_and_used(tmp_path: Path,
                                                          plugin_env: dict[str, str]) -> None:
    listed = vlmsearch(tmp_path, plugin_env, "list", "evaluators")
    assert listed.returncode == 0 and "fault injection for vlmsearch's tests" in listed.stdout
    write_space(tmp_path)
    checked = vlmsearch(tmp_path, plugin_env, "check", "space.yaml")
    assert checked.returncode == 0, checked.stderr
    without = vlmsearch(tmp_path, {**os.environ, "PYTHONPATH": ""}, "check", "space.yaml")
    assert without.returncode == 2 and "unknown evaluator 'fault'" in without.stderr


def test_a_broken_plugin_is_named_with_its_error(tmp_path: Path) -> None:
    site = tmp_path / "site" / "broken_plugin-0.1.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (site / "entry_points.txt").write_text("[vlmsearch.evaluators]\nfault = no_such_module:EVALUATOR\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    write_space(tmp_path)
    checked = vlmsearch(tmp_path, env, "check", "space.yaml")
    assert checked.returncode == 2 and "Traceback" not in checked.stderr
    assert "evaluator 'fault' is unavailable: entry point 'fault = no_such_module:EVALUATOR' " \
           "(group vlmsearch.evaluators) failed to load: ModuleNotFoundError" in checked.stderr
    assert vlmsearch(tmp_path, env, "list", "evaluators").returncode == 0, "other commands still work"
