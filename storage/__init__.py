"""The SQL results store: SQLite by default, PostgreSQL for clusters; Alembic migrations; the
sink that records a search; validation trials (`vlmsearch validate`); queries (studies, trials,
the Pareto front) and CSV/JSON export.
(`storage.testing`, a throwaway PostgreSQL server for tests and benchmarks, is a surface apart.)"""

from storage.engine import DEFAULT_STORAGE, StorageError, exists
from storage.export import metric_columns, to_json, write_csv
from storage.migrate import Upgrade
from storage.models import TRIAL_STATUSES
from storage.queries import TERMINAL, ParetoFront, StoredTrial, StudySummary, UnknownStudy
from storage.store import ResultsStore, upgrade_store
from storage.validation import ValidationKey, ValidationRow

__all__ = [
    "DEFAULT_STORAGE",
    "TERMINAL",
    "TRIAL_STATUSES",
    "ParetoFront",
    "ResultsStore",
    "StorageError",
    "StoredTrial",
    "StudySummary",
    "UnknownStudy",
    "Upgrade",
    "ValidationKey",
    "ValidationRow",
    "exists",
    "metric_columns",
    "to_json",
    "upgrade_store",
    "write_csv",
]
