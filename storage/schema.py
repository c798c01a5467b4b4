"""Whose database is this? A store is opened only where vlmsearch's tables are, or where no
program's are: another program's database (MLflow's SQLite file given as --storage, say) is
refused before anything is written to it, and read commands open a SQLite file read-only."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from sqlalchemy import Engine, inspect

from common import redact_url
from storage.engine import DEFAULT_STORAGE, StorageError

# Optuna's RDB storage shares the store's database (optuna.storages._rdb.models; its Alembic
# keeps `alembic_version`); tests/storage/test_schema.py checks this list against Optuna's models.
OPTUNA_TABLES = frozenset({
    "studies", "study_directions", "study_system_attributes", "study_user_attributes",
    "trial_heartbeats", "trial_intermediate_values", "trial_params", "trial_system_attributes",
    "trial_user_attributes", "trial_values", "trials", "version_info", "alembic_version"})
OURS = "vs_"  # every table of the results store starts with it
MLFLOW_TABLES = frozenset({"experiments", "runs", "metrics", "params"})  # for the hint only


class Owner(Enum):
    EMPTY = "empty"        # no tables: a new store
    VLMSEARCH = "vlmsearch"  # the results store's tables (with or without Optuna's, or others)
    OPTUNA = "optuna"      # only Optuna's: a study a user made with Optuna; vlmsearch adds its own
    FOREIGN = "foreign"    # another program's tables and none of vlmsearch's


def owner(engine: Engine) -> tuple[Owner, list[str]]:
    """Who owns the database's tables, and the tables that are neither vlmsearch's nor Optuna's."""
    tables = set(inspect(engine).get_table_names())
    other = sorted(t for t in tables if not t.startswith(OURS) and t not in OPTUNA_TABLES)
    if any(t.startswith(OURS) for t in tables):
        return Owner.VLMSEARCH, other
    if other:
        return Owner.FOREIGN, other
    return (Owner.OPTUNA if tables else Owner.EMPTY), other


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def refuse_non_sqlite(path: Path, url: str) -> None:
    """StorageError for a file that is not a SQLite database (an empty file is a new one)."""
    if path.is_dir():
        raise StorageError(f"storage {redact_url(url)}: '{path}' is a folder; name a database file in it, "
                           f"e.g. sqlite:///{path / 'results.db'}")
    with path.open("rb") as file:
        head = file.read(len(SQLITE_HEADER))
    if head and head != SQLITE_HEADER:
        raise StorageError(f"storage {redact_url(url)}: '{path}' is not a SQLite database (another kind of "
                           "file); nothing was changed. Give the store a search created (default "
                           f"{DEFAULT_STORAGE}) or a file that does not exist yet")


def refuse_foreign(engine: Engine, url: str) -> Owner:
    """The owner of `url`'s tables; StorageError when they are another program's."""
    found, other = owner(engine)
    if found is not Owner.FOREIGN:
        return found
    hint = ("; it looks like MLflow's tracking database, which belongs to --tracking"
            if set(other) >= MLFLOW_TABLES else "")
    shown = ", ".join(other[:6]) + (", ..." if len(other) > 6 else "")
    raise StorageError(f"storage {redact_url(url)} is not a vlmsearch results store: it holds another "
                       f"program's tables ({shown}) and none of vlmsearch's{hint}; nothing was changed. "
                       f"Give the store a search created (default {DEFAULT_STORAGE}) or a new file or "
                       "database")
