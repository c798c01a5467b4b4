"""Migrations: a store written with the first schema opens, upgraded, with its data intact; the
newest migration equals the models; a newer schema than this code knows is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, insert, inspect, text

from search_space.events import Front
from storage import ResultsStore, StorageError, upgrade_store
from storage.engine import make_engine
from storage.migrate import VERSION_TABLE, current, head, revisions, upgrade
from storage.models import PREFIX, Base
from tests.storage.helpers import SPACE, result

ROOT = Path(__file__).resolve().parents[2]


def write_first_schema(url: str) -> list:
    """Data as the first version wrote it: its tables only (reflected), no stored front."""
    engine = make_engine(url)
    assert upgrade(engine, revisions()[0]).after == "0001"
    old = MetaData()
    studies, trials, metrics = (Table(f"{PREFIX}{n}", old, autoload_with=engine)
                                for n in ("studies", "trials", "metrics"))
    assert "pareto_rank" not in trials.c and "hypervolume" not in studies.c
    now = datetime.now(timezone.utc)
    results = [result("small", n) for n in range(8)]
    with engine.begin() as connection:
        study_id = connection.execute(insert(studies).values(
            name="small", space_yaml=SPACE, settings={"backend": "optuna"}, status="finished",
            created_at=now, updated_at=now).returning(studies.c.id)).scalar_one()
        for r in results:
            trial_id = connection.execute(insert(trials).values(
                study_id=study_id, number=r.number, config_hash=r.config_hash, point=r.config.canonical(),
                status=r.status, steps=r.steps, failure_reason=r.failure.reason if r.failure else None,
                failure_message=r.failure.message if r.failure else None, infeasible=False, host=r.host,
                started_at=now, finished_at=now, duration_s=1.0).returning(trials.c.id)).scalar_one()
            for name, value in r.metrics.items():
                connection.execute(insert(metrics).values(trial_id=trial_id, name=name, final=True,
                                                          step=r.steps, value=value))
    engine.dispose()
    return results


def test_a_first_schema_store_opens_after_the_upgrade(url: str) -> None:
    results = write_first_schema(url)
    with ResultsStore(url) as store:  # opening upgrades
        assert store.revision is not None
        assert (store.revision.before, store.revision.after) == ("0001", head())
        (summary,) = store.studies()
        assert (summary.name, summary.status, summary.total) == ("small", "finished", 8)
        front = store.pareto_front("small")
        assert front.recomputed  # the first schema stored no front
        ranks, _ = store.ranks("small")
        for r in results:
            r.pareto_rank = ranks.get(r.number)
        assert [t.to_json() for t in store.trials("small")] == [r.to_json() for r in results]
        assert {t.number for t in front.trials} == {n for n, rank in ranks.items() if rank == 0}
        # and a resumed search goes on writing into it
        more = result("small", 8, status="complete")
        store.trial_finished("small", more)
        ranks, volume = store.ranks("small", recompute=True)
        store.front_updated("small", Front(ranks, volume, 9))
        assert not store.pareto_front("small").recomputed
        assert store.ranks("small") == (ranks, pytest.approx(volume))


def test_the_newest_migration_is_the_models(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "include_name": lambda name, kind, _: kind != "table" or (name or "").startswith(PREFIX),
            "compare_type": True, "version_table": VERSION_TABLE})
        assert compare_metadata(context, Base.metadata) == []
        assert current(connection) == head()
    engine.dispose()


def test_upgrading_twice_or_concurrently_opened_is_a_no_op(url: str) -> None:
    first, second = upgrade_store(url), upgrade_store(url)
    assert (first.before, first.after, first.changed) == (None, head(), True)
    assert (second.before, second.after, second.changed) == (head(), head(), False)
    engine = make_engine(url)
    assert {t for t in inspect(engine).get_table_names() if t.startswith(PREFIX)} == \
        {"vs_studies", "vs_trials", "vs_metrics", "vs_validation_trials", VERSION_TABLE}
    engine.dispose()


def test_a_newer_schema_is_refused(url: str) -> None:
    upgrade_store(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'f00d'"))
    engine.dispose()
    with pytest.raises(StorageError, match=r"revision 'f00d'.*upgrade vlmsearch"):
        ResultsStore(url)


def test_db_upgrade_command(url: str) -> None:
    def db_upgrade() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vlmsearch", "db", "upgrade", "--storage", url],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)

    done = db_upgrade()
    assert done.returncode == 0, done.stderr
    assert f"schema upgraded from empty to {head()}" in done.stdout
    again = db_upgrade()
    assert again.returncode == 0 and f"already at {head()}" in again.stdout
    assert json.dumps(revisions()) == '["0001", "0002", "0003"]'
