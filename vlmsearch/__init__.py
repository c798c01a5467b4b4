"""vlmsearch: declarative AutoML for multi-encoder vision-language models.

The public Python API: `run` a search, `trial` one design, `results` and `front` of a study as
pandas DataFrames, its factor `report` (DataFrames too), `validate` a study's front at a larger
budget, the `similarity` of a space's experts (a DataFrame too), and the space helpers; the
command line is `vlmsearch` (`vlmsearch --help`).
"""

from search_space import (
    SearchSpace,
    SpaceError,
    TrialConfig,
    compile_space,
    load,
    load_point,
    point_cost,
)
from vlmsearch.api import SearchFailed, front, report, results, run, similarity, trial, validate

__version__ = "0.1.0"
__all__ = [
    "SearchFailed",
    "SearchSpace",
    "SpaceError",
    "TrialConfig",
    "__version__",
    "compile_space",
    "front",
    "load",
    "load_point",
    "point_cost",
    "report",
    "results",
    "run",
    "similarity",
    "trial",
    "validate",
]
