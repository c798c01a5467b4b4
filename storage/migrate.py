"""Schema migrations (Alembic, in `storage/migrations`), applied on first use and by
`vlmsearch db upgrade`. Several processes may open a new store at once: the upgrade runs in one
transaction under a lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), and each
process reads the schema's revision only once it holds the lock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text

from storage.engine import StorageError, writer

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "vs_alembic_version"  # Optuna keeps its own `alembic_version` in the same database
LOCK_KEY = 0x76_6C_6D_73  # "vlms": the PostgreSQL advisory lock of migrations


@dataclass(frozen=True)
class Upgrade:
    before: str | None  # None: the store was empty
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def revisions() -> list[str]:
    """Every revision, oldest first."""
    return [s.revision for s in reversed(list(ScriptDirectory.from_config(config()).walk_revisions()))]


def current(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> Upgrade:
    """Bring the store's tables to `revision` (a no-op when they are there already)."""
    target = head() if revision == "head" else revision
    with engine.connect() as connection:
        if current(connection) == target:  # the common case: no lock, no write
            return Upgrade(target, target)
    with writer(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        before = current(connection)
        if before not in (None, *revisions()):
            raise StorageError(f"the store's schema is at revision '{before}', which this version of "
                               f"vlmsearch does not know (it knows up to '{head()}'); upgrade vlmsearch")
        try:
            command.upgrade(config(connection), revision)
        except CommandError as exc:
            raise StorageError(f"cannot migrate the store to '{revision}': {exc}") from None
        return Upgrade(before, current(connection) or "")
