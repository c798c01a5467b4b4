"""Searches started together on a new study database: Optuna's table creation and the study's
creation are races between processes. Each process must open the study (none may die of the
other's tables, CI saw `UNIQUE constraint failed: alembic_version.version_num`), and exactly one
creates and seeds it."""

from __future__ import annotations

from pathlib import Path

import optuna

from tests.at_once import START, run_at_once

OPEN = f"""\
import sys
from pathlib import Path
from tests.trials.search.search_helpers import SMALL_SPACE, make_spec
from trials.search.optuna_backend import OptunaBackend
from search_space.events import Sinks
database, folder = sys.argv[2], Path(sys.argv[3])
backend = OptunaBackend(make_spec(folder, SMALL_SPACE, storage=database, resume=True), Sinks([]))
{START}
print(backend.open_study().study_name)
"""


def test_searches_opening_one_new_study_at_once_all_succeed(tmp_path: Path, database: str) -> None:
    outs = run_at_once(OPEN, database, str(tmp_path))
    assert [out.strip() for out in outs] == ["small"] * 3
    studies = optuna.get_all_study_summaries(database)
    assert [s.study_name for s in studies] == ["small"]
    study = optuna.load_study(study_name="small", storage=database)
    assert study.user_attrs["space"]["objectives"][0]["metric"] == "accuracy"
    assert study.trials == []  # (no seeds in this space; nothing asked yet)
