"""The SQL results store: SQLite by default, PostgreSQL for clusters; Alembic migrations; the
sink that records a search; queries (studies, trials, the Pareto front) and CSV/JSON export."""

from storage.engine import DEFAULT_STORAGE, StorageError, exists
from storage.migrate import Upgrade
from storage.queries import ParetoFront, StoredTrial, StudySummary, UnknownStudy
from storage.store import ResultsStore, upgrade_store

__all__ = [
    "DEFAULT_STORAGE",
    "ParetoFront",
    "ResultsStore",
    "StorageError",
    "StoredTrial",
    "StudySummary",
    "UnknownStudy",
    "Upgrade",
    "exists",
    "upgrade_store",
]
